//! Bad values across the file: each one fails, naming its key.

use super::*;

#[test]
fn bad_values_name_their_key() {
    let cases = [
        ("[policy]\ngrace_period = \"soon\"", "grace_period"),
        ("[policy]\ngrace_period = 30", "grace_period"),
        ("[policy]\nreminders = [\"40d\"]", "policy.reminders[0]"),
        ("[policy]\ngrase_period = \"1d\"", "grase_period"),
        (
            "[jurisdictions.gdpr]\ndeadline = \"a month\"\nmax_extension = \"1d\"",
            "deadline",
        ),
        (
            "[policy]\ndefault_jurisdiction = \"lgpd\"",
            "policy.default_jurisdiction",
        ),
        ("[log]\nformat = \"xml\"", "format"),
        ("[[cleaners]]\nname = \"billing\"\nkind = \"http\"", "missing field `url`"),
        (
            "[[cleaners]]\nname = \"billing\"\nkind = \"http\"\nurl = \"ftp://x\"\nsecret = \"s\"",
            "cleaners[0].url",
        ),
        (
            "[[cleaners]]\nname = \"billing\"\nkind = \"smtp\"",
            "`kind` or its settings: unknown variant `smtp`",
        ),
        ("[[cleaners]]\nname = \"Billing\"\nkind = \"manual\"", "name"),
        (
            "[[cleaners]]\nname = \"crm\"\nkind = \"manual\"\nretry = { max_attempts = 0 }",
            "cleaners[0].retry.max_attempts",
        ),
        (
            "[[cleaners]]\nname = \"crm\"\nkind = \"manual\"\nmatch = { jurisdictions = [\"lgpd\"] }",
            "cleaners[0].match.jurisdictions",
        ),
        (
            "[[cleaners]]\nname = \"crm\"\nkind = \"manual\"\nwindow = { start = \"1am\", end = \"05:00\", tz = \"UTC\" }",
            "start",
        ),
        (
            "[[cleaners]]\nname = \"crm\"\nkind = \"manual\"\nwindow = { start = \"01:00\", end = \"05:00\", tz = \"Mars/Olympus\" }",
            "tz",
        ),
        (
            "[[cleaners]]\nname = \"crm\"\nkind = \"manual\"\n[[cleaners]]\nname = \"crm\"\nkind = \"manual\"",
            "cleaners[1].name",
        ),
        ("[kafka]\nbrokers = \"b:9092\"\npublish = { Doo = \"t\" }", "kafka.publish.Doo"),
        ("[kafka]\nbrokers = \"\"", "kafka.brokers"),
        (
            "[kafka]\nbrokers = \"b:9092\"\nresults_topic = \" \"",
            "kafka.results_topic",
        ),
        (
            "[kafka]\nbrokers = \"b:9092\"\ndead_letter_topic = \"\"",
            "kafka.dead_letter_topic",
        ),
    ];
    for (text, key) in cases {
        let message = Config::parse(text).unwrap_err().to_string();
        assert!(message.contains(key), "{text:?} gave {message:?}");
    }
}
