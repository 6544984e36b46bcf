//! The HTML around the pages: the document, its style, and escaping.

use std::fmt;

/// The page's only style, inline (allowed by its hash in the CSP).
pub(super) const CSS: &str = include_str!("style.css");

/// The whole document around `main` (HTML).
pub(in crate::http) fn document(title: &str, main: &str) -> String {
    document_with(title, "", "", main)
}

pub(super) fn document_with(title: &str, head: &str, meta: &str, main: &str) -> String {
    format!(
        "<!doctype html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n{head}\
         <title>{}</title>\n<style>{CSS}</style>\n</head>\n<body>\n\
         <header class=\"top\"><div class=\"wrap\"><div class=\"brand\">Lethe<span>erasure \
         requests</span></div><div class=\"meta\">{meta}</div></div></header>\n\
         <main class=\"wrap\">\n{main}\n</main>\n</body>\n</html>\n",
        Esc(title)
    )
}

/// HTML-escapes text for element content and quoted attribute values.
#[derive(Debug, Clone, Copy)]
pub struct Esc<'a>(pub &'a str);

impl fmt::Display for Esc<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut rest = self.0;
        while let Some(at) = rest.find(['&', '<', '>', '"', '\'']) {
            f.write_str(&rest[..at])?;
            f.write_str(match rest.as_bytes()[at] {
                b'&' => "&amp;",
                b'<' => "&lt;",
                b'>' => "&gt;",
                b'"' => "&quot;",
                _ => "&#39;",
            })?;
            rest = &rest[at + 1..];
        }
        f.write_str(rest)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_markup() {
        assert_eq!(
            Esc(r#"<a href="x">'&'</a>"#).to_string(),
            "&lt;a href=&quot;x&quot;&gt;&#39;&amp;&#39;&lt;/a&gt;"
        );
        assert_eq!(Esc("plain é").to_string(), "plain é");
    }
}
