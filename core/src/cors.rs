//! Cross-origin requests: the allow-list of origins and the headers it grants.
//!
//! An allow-listed origin is remembered by its index in the list (a `u16`), so a held poll
//! carries two bytes rather than a string, and answers to the same origin share one encoding.

/// The origins allowed to read from (and publish to) this server from another site.
#[derive(Debug)]
pub(crate) struct Cors {
    origins: Vec<String>,
}

/// The answer headers a cross-origin page may read beyond the safelisted ones.
pub(crate) const EXPOSED: &str = "Parlor-Cursor, Parlor-Gap, Parlor-Reset, Retry-After";

/// Headers that let an allow-listed origin read an answer: a poll's or a publish's, and every
/// error answer too (its status, its reason, its `Retry-After`).
pub(crate) fn answer_headers(origin: &str) -> [(&str, &str); 3] {
    [
        ("Access-Control-Allow-Origin", origin),
        ("Access-Control-Expose-Headers", EXPOSED),
        ("Vary", "Origin"),
    ]
}

/// Headers of a preflight answer for an allow-listed origin and the route's methods.
pub(crate) fn preflight_headers<'a>(origin: &'a str, allowed: &'a str) -> [(&'a str, &'a str); 5] {
    [
        ("Access-Control-Allow-Origin", origin),
        ("Access-Control-Allow-Methods", allowed),
        (
            "Access-Control-Allow-Headers",
            "Content-Type, Last-Event-ID",
        ),
        ("Access-Control-Max-Age", "600"),
        ("Vary", "Origin"),
    ]
}

impl Cors {
    /// The allow-list from the configuration.
    pub fn new(origins: Vec<String>) -> Cors {
        Cors { origins }
    }

    /// The index of `origin` in the allow-list, if it is there.
    pub fn index(&self, origin: Option<&str>) -> Option<u16> {
        let origin = origin?;
        let i = self.origins.iter().position(|o| o == origin)?;
        u16::try_from(i).ok()
    }

    /// The allow-listed origin at `index`, if any.
    pub fn origin(&self, index: Option<u16>) -> Option<&str> {
        index
            .and_then(|i| self.origins.get(usize::from(i)))
            .map(String::as_str)
    }

    /// Whether an `Origin` may publish: same host as the request, or in the allow-list.
    pub fn may_publish(&self, origin: &str, host: Option<&str>) -> bool {
        if self.origins.iter().any(|o| o == origin) {
            return true;
        }
        let Some(host) = host else {
            return false;
        };
        let authority = origin
            .strip_prefix("http://")
            .or_else(|| origin.strip_prefix("https://"));
        authority.is_some_and(|a| a.eq_ignore_ascii_case(host))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn allow_list() {
        let cors = Cors::new(vec!["https://a.example".into(), "http://b.example".into()]);
        assert_eq!(cors.index(Some("http://b.example")), Some(1));
        assert_eq!(cors.index(Some("http://c.example")), None);
        assert_eq!(cors.index(None), None);
        assert_eq!(cors.origin(Some(0)), Some("https://a.example"));
        assert_eq!(cors.origin(Some(2)), None);
        assert!(cors.may_publish("https://a.example", None));
        assert!(cors.may_publish("http://Chat.Example", Some("chat.example")));
        assert!(!cors.may_publish("http://evil.example", Some("chat.example")));
        assert!(!cors.may_publish("null", Some("chat.example")));
    }
}
