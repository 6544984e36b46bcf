//! The generated cases: for every route, bad bodies, wrong methods, hostile queries, headers
//! and path parameters; and routes that do not exist.

use super::*;

pub(crate) fn cases(server: &Server, auth: Auth, rng: &mut StdRng) -> Vec<Case> {
    let token = format!("Bearer {TOKEN}");
    let mut cases = Cases {
        auth: match auth {
            Auth::Token => vec![("Authorization", token.as_bytes())],
            Auth::Off | Auth::Missing => Vec::new(),
        },
        cases: Vec::new(),
    };
    let routes = routes();
    for (method, template) in &routes {
        let path = template
            .replace("{id}", &server.id)
            .replace("{name}", "billing");
        body_cases(&mut cases, method, &path, rng);
        wrong_method_cases(&mut cases, &routes, template, &path);
        query_cases(&mut cases, method, &path);
        header_cases(&mut cases, method, &path);
        path_parameter_cases(&mut cases, method, template);
        cases.push(
            format!("{path} HEAD"),
            "HEAD",
            path.clone().into_bytes(),
            vec![],
            b"",
            Expect::Problem,
        );
    }
    // Routes that do not exist.
    for target in [
        "/",
        "/v2/requests",
        "/v1/requests/",
        "/v1/requests:bulk/x",
        "/.env",
        "/v1/requests/a/b/c/d",
    ] {
        cases.push(
            format!("{target} unknown"),
            "GET",
            target.as_bytes().to_vec(),
            vec![],
            b"",
            Expect::Status(404),
        );
    }
    cases.cases
}

/// The cases of a run, each request sent with the run's `Authorization` header if any.
struct Cases<'a> {
    auth: Vec<(&'a str, &'a [u8])>,
    cases: Vec<Case>,
}

impl Cases<'_> {
    fn push(
        &mut self,
        name: String,
        method: &str,
        target: Vec<u8>,
        headers: Vec<(&str, &[u8])>,
        body: &[u8],
        expect: Expect,
    ) {
        let mut all = self.auth.clone();
        all.extend(headers);
        self.cases.push(Case {
            name: format!("{method} {name}"),
            bytes: request(method, &target, &all, body),
            head: method == "HEAD",
            expect,
        });
    }
}

/// Bodies, each with a content type drawn from the seed; a route that reads no body gets a
/// sample of them.
fn body_cases(cases: &mut Cases<'_>, method: &str, path: &str, rng: &mut StdRng) {
    let target = |suffix: &str| format!("{path}{suffix}").into_bytes();
    let reads_body = method != "GET";
    for (name, body) in bodies(rng) {
        if !reads_body && !rng.random_ratio(1, 4) {
            continue;
        }
        let content_type = CONTENT_TYPES[rng.random_range(0..CONTENT_TYPES.len())];
        cases.push(
            format!("{path} body {name}"),
            method,
            target(""),
            vec![("Content-Type", content_type)],
            &body,
            Expect::Problem,
        );
    }
}

/// Methods the path does not serve.
fn wrong_method_cases(
    cases: &mut Cases<'_>,
    routes: &[(String, String)],
    template: &str,
    path: &str,
) {
    let target = |suffix: &str| format!("{path}{suffix}").into_bytes();
    for other in METHODS {
        let served = routes.iter().any(|(m, t)| m == other && t == template)
            || (other == "GET" && template == "/v1/requests");
        if !served {
            cases.push(
                format!("{path} wrong method"),
                other,
                target(""),
                vec![],
                b"",
                Expect::Status(405),
            );
        }
    }
}

/// The query string: NUL, overlong and invalid UTF-8, in values and names.
fn query_cases(cases: &mut Cases<'_>, method: &str, path: &str) {
    let target = |suffix: &str| format!("{path}{suffix}").into_bytes();
    for (name, query) in [
        ("nul value", "?jurisdiction=%00"),
        ("overlong value", "?jurisdiction=%C0%80"),
        ("invalid name", "?%FF=1"),
        ("nul token", "?token=a%00b"),
        ("control", "?status=%1B%5B2J"),
        ("nul cursor", "?cursor=%00&limit=1"),
    ] {
        cases.push(
            format!("{path} query {name}"),
            method,
            target(query),
            vec![],
            b"",
            Expect::Status(400),
        );
    }
    cases.push(
        format!("{path} raw byte in query"),
        method,
        target("?a=\u{e9}"),
        vec![],
        b"",
        Expect::Problem,
    );
    cases.push(
        format!("{path} long query"),
        method,
        target(&format!("?a={}", "b".repeat(9000))),
        vec![],
        b"",
        Expect::Status(414),
    );
}

/// Headers.
fn header_cases(cases: &mut Cases<'_>, method: &str, path: &str) {
    let target = |suffix: &str| format!("{path}{suffix}").into_bytes();
    let many: Vec<(String, Vec<u8>)> = (0..150)
        .map(|i| (format!("X-Many-{i}"), b"1".to_vec()))
        .collect();
    let many_refs: Vec<(&str, &[u8])> = many
        .iter()
        .map(|(n, v)| (n.as_str(), v.as_slice()))
        .collect();
    cases.push(
        format!("{path} 150 headers"),
        method,
        target(""),
        many_refs,
        b"",
        Expect::Status(431),
    );
    let big = vec![b'a'; 40 * 1024];
    cases.push(
        format!("{path} 40 KiB header"),
        method,
        target(""),
        vec![("X-Big", &big)],
        b"",
        Expect::Status(431),
    );
    cases.push(
        format!("{path} obs-text idempotency key"),
        method,
        target(""),
        vec![("Idempotency-Key", b"\xff\xfe")],
        b"",
        Expect::Problem,
    );
    cases.push(
        format!("{path} long idempotency key"),
        method,
        target(""),
        vec![("Idempotency-Key", &[b'k'; 300])],
        b"",
        Expect::Problem,
    );
    cases.push(
        format!("{path} obs-text token"),
        method,
        target(""),
        vec![("Authorization", b"Bearer \xff")],
        b"",
        Expect::Problem,
    );
    cases.push(
        format!("{path} basic auth"),
        method,
        target(""),
        vec![("Authorization", b"Basic eDp5")],
        b"",
        Expect::Problem,
    );
    cases.push(
        format!("{path} nul in a header"),
        method,
        target(""),
        vec![("X-Nul", b"a\0b")],
        b"",
        Expect::Unparseable,
    );
    cases.push(
        format!("{path} bad last-event-id"),
        method,
        target(""),
        vec![("Last-Event-ID", b"\xff")],
        b"",
        Expect::Problem,
    );
    cases.push(
        format!("{path} huge declared length"),
        method,
        target(""),
        vec![("Content-Length", b"10000000000")],
        b"",
        Expect::Problem,
    );
    cases.push(
        format!("{path} expect continue"),
        method,
        target(""),
        vec![("Expect", b"100-continue")],
        b"{}",
        Expect::Problem,
    );
    cases.push(
        format!("{path} bad chunked"),
        method,
        target(""),
        vec![("Transfer-Encoding", b"chunked")],
        b"zz\r\n{}\r\n0\r\n\r\n",
        Expect::Problem,
    );
}

/// The path's parameters: NUL, overlong UTF-8, too long, dot segments.
fn path_parameter_cases(cases: &mut Cases<'_>, method: &str, template: &str) {
    if template.contains('{') {
        for (name, value) in [
            ("nul", "%00"),
            ("overlong", "%C0%80"),
            ("long", &"9".repeat(400)),
            ("dots", "%2e%2e"),
            ("emoji", "%F0%9F%92%A5"),
        ] {
            let bad = template.replace("{id}", value).replace("{name}", value);
            cases.push(
                format!("{bad} path {name}"),
                method,
                bad.clone().into_bytes(),
                vec![],
                b"",
                Expect::Problem,
            );
        }
    }
}
