//! Small text formats of the API: query strings, form bodies, the publish body, JSON strings.

use std::borrow::Cow;

/// The first value of `key` in a query string or form body, percent-decoded (`+` is a space).
/// `Err(())` when the value's percent-encoding is broken or it is not UTF-8.
pub(crate) fn field<'a>(query: &'a [u8], key: &str) -> Result<Option<Cow<'a, str>>, ()> {
    for pair in query.split(|&b| b == b'&') {
        let (k, v) = match pair.iter().position(|&b| b == b'=') {
            Some(i) => (&pair[..i], &pair[i + 1..]),
            None => (pair, &b""[..]),
        };
        // Keys are plain words: compare without decoding unless the key is encoded.
        let matches = if k.iter().any(|&b| b == b'%' || b == b'+') {
            decode(k)?.as_slice() == key.as_bytes()
        } else {
            k == key.as_bytes()
        };
        if matches {
            // Borrowed when nothing needs decoding (the common case): no allocation.
            if !v.iter().any(|&b| b == b'%' || b == b'+') {
                return std::str::from_utf8(v)
                    .map(|v| Some(Cow::Borrowed(v)))
                    .map_err(|_| ());
            }
            return String::from_utf8(decode(v)?)
                .map(|v| Some(Cow::Owned(v)))
                .map_err(|_| ());
        }
    }
    Ok(None)
}

/// Whether a form body has a field `key=...` (the key compared decoded, when it decodes).
fn has_field(body: &[u8], key: &str) -> bool {
    body.split(|&b| b == b'&').any(|pair| {
        let Some(i) = pair.iter().position(|&b| b == b'=') else {
            return false;
        };
        let k = &pair[..i];
        k == key.as_bytes() || decode(k).is_ok_and(|k| k == key.as_bytes())
    })
}

/// Percent-decoding with `+` as space.
fn decode(s: &[u8]) -> Result<Vec<u8>, ()> {
    let mut out = Vec::with_capacity(s.len());
    let mut i = 0;
    while i < s.len() {
        match s[i] {
            b'+' => out.push(b' '),
            b'%' => {
                let hex = |b: u8| (b as char).to_digit(16);
                let hi = s.get(i + 1).copied().and_then(hex).ok_or(())?;
                let lo = s.get(i + 2).copied().and_then(hex).ok_or(())?;
                out.push((hi * 16 + lo) as u8);
                i += 2;
            }
            b => out.push(b),
        }
        i += 1;
    }
    Ok(out)
}

/// The media type of a `Content-Type` value, without parameters (case is kept).
fn media_type(content_type: &str) -> &str {
    content_type.split(';').next().unwrap_or("").trim()
}

/// The body formats a publish accepts (DESIGN §2), and the rest.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Media {
    /// `text/plain`, or no `Content-Type` at all.
    Text,
    /// `application/x-www-form-urlencoded`
    Form,
    /// `application/json`
    Json,
    /// Anything else.
    Other,
}

impl Media {
    /// The media of a `Content-Type` value (none: plain text). Media types are
    /// case-insensitive.
    pub(crate) fn of(content_type: Option<&str>) -> Media {
        let Some(ct) = content_type else {
            return Media::Text;
        };
        let m = media_type(ct);
        if m.is_empty() || m.eq_ignore_ascii_case("text/plain") {
            Media::Text
        } else if m.eq_ignore_ascii_case("application/x-www-form-urlencoded") {
            Media::Form
        } else if m.eq_ignore_ascii_case("application/json") {
            Media::Json
        } else {
            Media::Other
        }
    }
}

/// Whether an `Accept` value asks for JSON.
pub(crate) fn accepts_json(accept: &str) -> bool {
    accept
        .split(',')
        .any(|part| media_type(part).eq_ignore_ascii_case("application/json"))
}

/// A publish body, decoded: the message text and the optional client id.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Publish {
    pub message: String,
    pub id: Option<String>,
}

/// Why a publish body was refused: status and reason.
pub(crate) type Refusal = (u16, &'static str);

/// Decodes a publish body by its media type (DESIGN §2).
pub(crate) fn publish_body(media: Media, body: Vec<u8>) -> Result<Publish, Refusal> {
    const NOT_UTF8: Refusal = (400, "message is not valid UTF-8");
    match media {
        Media::Text => {
            // The body becomes the message without a copy.
            let message = String::from_utf8(body).map_err(|_| NOT_UTF8)?;
            Ok(Publish { message, id: None })
        }
        Media::Form if !has_field(&body, "message") && !has_field(&body, "id") => {
            // `curl -d 'c++ is 100% fun'` sends the text as typed, labelled as a form: a body
            // that is not a real form (no `message=` or `id=` field) is the message, exactly as
            // sent, never percent-decoded.
            let message = String::from_utf8(body).map_err(|_| NOT_UTF8)?;
            Ok(Publish { message, id: None })
        }
        Media::Form => {
            let message = field(&body, "message")
                .map_err(|()| (400, "form field is not valid UTF-8 or percent-encoding"))?
                .ok_or((400, "missing message field"))?;
            let id = field(&body, "id").map_err(|()| (400, "invalid id field"))?;
            Ok(Publish {
                message: message.into_owned(),
                id: id.map(Cow::into_owned),
            })
        }
        Media::Json => {
            std::str::from_utf8(&body).map_err(|_| NOT_UTF8)?;
            let value: serde_json::Value =
                serde_json::from_slice(&body).map_err(|_| (400, "invalid JSON body"))?;
            let object = value
                .as_object()
                .ok_or((400, "JSON body must be an object"))?;
            let message = match object.get("message") {
                Some(serde_json::Value::String(s)) => s.clone(),
                Some(_) => return Err((400, "message must be a string")),
                None => return Err((400, "missing message field")),
            };
            let id = match object.get("id") {
                None | Some(serde_json::Value::Null) => None,
                Some(serde_json::Value::String(s)) => Some(s.clone()),
                Some(_) => return Err((400, "id must be a string")),
            };
            Ok(Publish { message, id })
        }
        Media::Other => Err((415, "unsupported content type")),
    }
}

/// Appends `s` as a JSON string literal (quotes included).
pub(crate) fn push_json_string(out: &mut Vec<u8>, s: &[u8]) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    out.push(b'"');
    for &b in s {
        match b {
            b'"' => out.extend_from_slice(b"\\\""),
            b'\\' => out.extend_from_slice(b"\\\\"),
            b'\n' => out.extend_from_slice(b"\\n"),
            b'\r' => out.extend_from_slice(b"\\r"),
            b'\t' => out.extend_from_slice(b"\\t"),
            // `<` too, so a JSON answer can never be sniffed or embedded as markup.
            0..=0x1f | b'<' | 0x7f => {
                out.extend_from_slice(b"\\u00");
                out.push(HEX[(b >> 4) as usize]);
                out.push(HEX[(b & 15) as usize]);
            }
            _ => out.push(b),
        }
    }
    out.push(b'"');
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_fields() {
        let q = b"room=a%2Db&since=abc-1&x&msg=hello+world%21";
        assert_eq!(field(q, "room"), Ok(Some("a-b".into())));
        assert_eq!(field(q, "since"), Ok(Some("abc-1".into())));
        assert_eq!(field(q, "x"), Ok(Some("".into())));
        // Nothing to decode: borrowed, no copy; still checked as UTF-8.
        assert!(matches!(
            field(q, "since"),
            Ok(Some(Cow::Borrowed("abc-1")))
        ));
        assert!(matches!(field(q, "room"), Ok(Some(Cow::Owned(_)))));
        assert_eq!(field(b"a=\xff", "a"), Err(()));
        assert_eq!(field(q, "msg"), Ok(Some("hello world!".into())));
        assert_eq!(field(q, "none"), Ok(None));
        assert_eq!(field(b"a=%zz", "a"), Err(()));
        assert_eq!(field(b"a=%", "a"), Err(()));
        assert_eq!(field(b"a=%ff", "a"), Err(()));
        assert_eq!(field(b"room=1&room=2", "room"), Ok(Some("1".into())));
        assert_eq!(field(b"r%6Fom=x", "room"), Ok(Some("x".into())));
    }

    #[test]
    fn publish_bodies() {
        let p = |m: &str, b: &[u8]| publish_body(Media::of(Some(m)), b.to_vec());
        assert_eq!(p("text/plain", b"hi").unwrap().message, "hi");
        assert_eq!(p("", b"hi").unwrap().message, "hi");
        assert_eq!(
            p("text/plain", b"\xff"),
            Err((400, "message is not valid UTF-8"))
        );
        let form = p(
            "application/x-www-form-urlencoded",
            b"message=a+b%26c&id=k1",
        )
        .unwrap();
        assert_eq!(
            (form.message.as_str(), form.id.as_deref()),
            ("a b&c", Some("k1"))
        );
        assert_eq!(
            p("application/x-www-form-urlencoded", b"other=1")
                .unwrap()
                .message,
            "other=1"
        );
        let json = p(
            "application/json",
            br#"{"message":"x\u00e9\ud83d\ude00","id":"7"}"#,
        )
        .unwrap();
        assert_eq!(
            (json.message.as_str(), json.id.as_deref()),
            ("x\u{e9}\u{1f600}", Some("7"))
        );
        assert_eq!(p("application/json", b"[1]").unwrap_err().0, 400);
        assert_eq!(
            p("application/json", br#"{"message":1}"#).unwrap_err().0,
            400
        );
        assert_eq!(p("application/json", b"{").unwrap_err().0, 400);
        // `curl -d` as people type it: not a form with a message, so the text exactly as sent.
        let form = |b: &[u8]| p("application/x-www-form-urlencoded", b);
        for typed in [
            "c++ is 100% fun",
            "a+b",
            "is 2+2=4?",
            "message",
            "a=b&c=d",
            "%zz",
        ] {
            assert_eq!(form(typed.as_bytes()).unwrap().message, typed, "{typed:?}");
        }
        assert_eq!(form(b"m%65ssage=a+b").unwrap().message, "a b");
        assert_eq!(form(b"x=1&message=%21").unwrap().message, "!");
        assert_eq!(form(b"id=7").unwrap_err(), (400, "missing message field"));
        assert_eq!(
            form(b"\xff").unwrap_err(),
            (400, "message is not valid UTF-8")
        );
        assert_eq!(p("image/png", b"x").unwrap_err().0, 415);
    }

    #[test]
    fn media_types() {
        assert_eq!(Media::of(Some("Text/Plain; charset=utf-8")), Media::Text);
        assert_eq!(Media::of(None), Media::Text);
        assert_eq!(Media::of(Some("APPLICATION/JSON")), Media::Json);
        assert_eq!(
            Media::of(Some("application/x-www-form-urlencoded; charset=utf-8")),
            Media::Form
        );
        assert_eq!(Media::of(Some("text/html")), Media::Other);
        assert!(accepts_json("text/html, application/json;q=0.9"));
        assert!(!accepts_json("*/*"));
    }

    #[test]
    fn json_strings_are_escaped() {
        let mut out = Vec::new();
        push_json_string(&mut out, "a\"b\\c\n<img>\u{1}é".as_bytes());
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "\"a\\\"b\\\\c\\n\\u003cimg>\\u0001é\""
        );
    }
}
