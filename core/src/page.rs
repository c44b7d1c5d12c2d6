//! The chat page and its files, compiled in and encoded once, with their security policy.

use bytes::Bytes;

use crate::response::{Persist, Response};

/// The chat page and its files.
const INDEX_HTML: &str = include_str!("../assets/index.html");
const CHAT_JS: &str = include_str!("../assets/chat.js");
const CHAT_CSS: &str = include_str!("../assets/chat.css");
/// The page's icon (an SVG file of its own: the CSP refuses inline `data:` icons).
const FAVICON_SVG: &str = include_str!("../assets/favicon.svg");

/// The Content-Security-Policy every asset carries: the page loads only its own files.
const CSP: &str = "default-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'";

/// A constant response in its three connection variants, with the length of its head (for HEAD).
#[derive(Debug)]
pub(crate) struct Asset {
    variants: [Bytes; 3],
    head_len: [usize; 3],
}

impl Asset {
    fn new(content_type: &str, body: &[u8], csp: bool) -> Asset {
        let headers: &[(&str, &str)] = if csp {
            &[("Content-Security-Policy", CSP)]
        } else {
            &[]
        };
        let build = |persist| {
            let full = Response {
                headers,
                persist,
                ..Response::new(200, Some(content_type), body)
            }
            .encode();
            let head = full.len() - body.len();
            (full, head)
        };
        let [a, b, c] = [Persist::KeepAlive, Persist::KeepAlive10, Persist::Close].map(build);
        Asset {
            variants: [a.0, b.0, c.0],
            head_len: [a.1, b.1, c.1],
        }
    }

    /// The encoded answer for this connection header, or only its head (for `HEAD`).
    pub fn get(&self, persist: Persist, head_only: bool) -> Bytes {
        let i = persist_index(persist);
        if head_only {
            self.variants[i].slice(..self.head_len[i])
        } else {
            self.variants[i].clone()
        }
    }
}

fn persist_index(p: Persist) -> usize {
    match p {
        Persist::KeepAlive => 0,
        Persist::KeepAlive10 => 1,
        Persist::Close => 2,
    }
}

/// Which file of the page.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum File {
    /// `/`
    Index,
    /// `/chat.js`
    Script,
    /// `/chat.css`
    Style,
    /// `/favicon.svg` (and `/favicon.ico`, which browsers ask for on their own)
    Icon,
}

/// The page's files, encoded.
#[derive(Debug)]
pub(crate) struct Page {
    index: Asset,
    script: Asset,
    style: Asset,
    icon: Asset,
}

impl Page {
    /// Encodes every file once.
    pub fn new() -> Page {
        Page {
            index: Asset::new("text/html; charset=utf-8", INDEX_HTML.as_bytes(), true),
            script: Asset::new("text/javascript; charset=utf-8", CHAT_JS.as_bytes(), true),
            style: Asset::new("text/css; charset=utf-8", CHAT_CSS.as_bytes(), true),
            icon: Asset::new("image/svg+xml", FAVICON_SVG.as_bytes(), true),
        }
    }

    /// One file.
    pub fn file(&self, file: File) -> &Asset {
        match file {
            File::Index => &self.index,
            File::Script => &self.script,
            File::Style => &self.style,
            File::Icon => &self.icon,
        }
    }
}
