//! A body known in full (a script, a schema, a CSV file) with its ETag, so that
//! ClickHouse and curl can ask "has it changed?" and get a 304 when it has not.

use bytes::Bytes;
use http::header::{CACHE_CONTROL, CONTENT_TYPE, ETAG, IF_NONE_MATCH};
use http::{HeaderMap, HeaderValue, Response, StatusCode};
use sha2::{Digest, Sha256};

use super::routes::{Body, full};

/// A body, its media type and its strong ETag (a digest of the bytes).
#[derive(Debug, Clone)]
pub struct Resource {
    body: Bytes,
    content_type: &'static str,
    etag: HeaderValue,
}

impl Resource {
    /// A resource over `body`; the ETag follows from the bytes alone.
    pub fn new(body: impl Into<Bytes>, content_type: &'static str) -> Resource {
        let body = body.into();
        let digest = Sha256::digest(&body);
        let hex: String = digest[..12].iter().map(|b| format!("{b:02x}")).collect();
        let etag = HeaderValue::try_from(format!("\"{hex}\""))
            .expect("quoted hex digits form a header value");
        Resource {
            body,
            content_type,
            etag,
        }
    }

    /// The bytes served, for the tests of what builds them.
    #[cfg(test)]
    pub fn body(&self) -> &Bytes {
        &self.body
    }

    /// 304 when `If-None-Match` names the current ETag, else 200 with the body
    /// (hyper leaves the body out of a HEAD answer and keeps its length).
    pub fn respond(&self, request: &HeaderMap) -> Response<Body> {
        let mut response = if self.matches(request) {
            let mut response = Response::new(full(Bytes::new()));
            *response.status_mut() = StatusCode::NOT_MODIFIED;
            response
        } else {
            let mut response = Response::new(full(self.body.clone()));
            response
                .headers_mut()
                .insert(CONTENT_TYPE, HeaderValue::from_static(self.content_type));
            response
        };
        let headers = response.headers_mut();
        headers.insert(ETAG, self.etag.clone());
        headers.insert(CACHE_CONTROL, HeaderValue::from_static("no-cache"));
        response
    }

    /// Whether any `If-None-Match` value lists this ETag (weakly compared) or is `*`.
    fn matches(&self, request: &HeaderMap) -> bool {
        let ours = self.etag.as_bytes();
        request
            .get_all(IF_NONE_MATCH)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .map(str::trim)
            .any(|tag| tag == "*" || tag.trim_start_matches("W/").as_bytes() == ours)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn conditional(value: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(IF_NONE_MATCH, HeaderValue::from_str(value).unwrap());
        headers
    }

    #[test]
    fn the_etag_follows_the_bytes() {
        let a = Resource::new("a", "text/plain");
        assert_eq!(a.etag, Resource::new("a", "text/csv").etag);
        assert_ne!(a.etag, Resource::new("b", "text/plain").etag);
    }

    #[test]
    fn if_none_match_lists_are_understood() {
        let r = Resource::new("body", "text/plain");
        let etag = r.etag.to_str().unwrap().to_owned();
        assert!(r.matches(&conditional(&format!("\"x\", W/{etag}"))));
        assert!(r.matches(&conditional("*")));
        assert!(!r.matches(&conditional("\"other\"")));
        assert!(!r.matches(&HeaderMap::new()));
        assert_eq!(
            r.respond(&conditional(&etag)).status(),
            StatusCode::NOT_MODIFIED
        );
        assert_eq!(r.respond(&HeaderMap::new()).status(), StatusCode::OK);
    }
}
