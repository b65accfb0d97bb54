//! Checks of the request head that HTTP requires of a server and that the
//! parser does not make, answered with the API's JSON errors: a URI or a
//! header section over the server's limits (414, 431) and an HTTP/1.1
//! request without exactly one valid `Host` (400).
//!
//! These limits sit below the parser's own (the connection's read buffer,
//! [`PARSER_BUFFER_BYTES`], and its 100 headers), so that a long URI or a
//! large header section gets a JSON answer here. A head the parser cannot
//! read at all (a malformed request line, a head over its buffer, more than
//! 100 headers) is answered by the parser with the bare status and an
//! empty body, and the connection is closed.

use axum::extract::Request;
use axum::http::{HeaderMap, StatusCode, Version, header};

use super::error::ApiError;

/// The longest request target (path and query, or absolute URI) answered.
pub const MAX_URI_BYTES: usize = 8 * 1024;

/// The largest header section answered: names, values and their framing.
pub const MAX_HEADER_BYTES: usize = 32 * 1024;

/// The parser's read buffer, the bound on a whole request head; above the
/// two limits above.
pub const PARSER_BUFFER_BYTES: usize = 64 * 1024;

/// Refuses a request whose head breaks a rule of this module.
pub fn check_head(request: &Request) -> Result<(), ApiError> {
    let uri = request.uri();
    let uri_bytes = uri.path_and_query().map_or(0, |target| target.as_str().len())
        + uri.authority().map_or(0, |authority| authority.as_str().len());
    if uri_bytes > MAX_URI_BYTES {
        return Err(ApiError::new(
            StatusCode::URI_TOO_LONG,
            "uri_too_long",
            format!("the request URI is {uri_bytes} bytes, over the limit of {MAX_URI_BYTES}"),
        ));
    }
    let header_bytes = header_section_bytes(request.headers());
    if header_bytes > MAX_HEADER_BYTES {
        return Err(ApiError::new(
            StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            "headers_too_large",
            format!(
                "the request headers are {header_bytes} bytes, over the limit of {MAX_HEADER_BYTES}"
            ),
        ));
    }
    if request.version() == Version::HTTP_11 {
        check_host(request.headers())?;
    }
    Ok(())
}

/// The size of the header section as sent: `name: value\r\n` per field.
fn header_section_bytes(headers: &HeaderMap) -> usize {
    headers.iter().map(|(name, value)| name.as_str().len() + value.len() + 4).sum()
}

/// RFC 9112 §3.2: an HTTP/1.1 request carries exactly one `Host`, empty
/// or a valid host and port.
fn check_host(headers: &HeaderMap) -> Result<(), ApiError> {
    let mut hosts = headers.get_all(header::HOST).iter();
    let Some(host) = hosts.next() else {
        return Err(ApiError::invalid("missing_host", "an HTTP/1.1 request needs a Host header"));
    };
    if hosts.next().is_some() {
        return Err(ApiError::invalid("invalid_host", "the request has more than one Host header"));
    }
    let valid = host.is_empty()
        || host
            .to_str()
            .ok()
            .and_then(|text| text.parse::<axum::http::uri::Authority>().ok())
            .is_some_and(|authority| {
                !authority.as_str().contains('@') && port_is_valid(&authority)
            });
    if !valid {
        return Err(ApiError::invalid("invalid_host", "the Host header is not a host and port"));
    }
    Ok(())
}

/// No port, an empty one (RFC 3986 allows `host:`), or digits of 0..65535.
fn port_is_valid(authority: &axum::http::uri::Authority) -> bool {
    let after_host = &authority.as_str()[authority.host().len()..];
    let digits = after_host.strip_prefix(':').unwrap_or(after_host);
    after_host.is_empty()
        || (digits.bytes().all(|byte| byte.is_ascii_digit()) && digits.parse::<u16>().is_ok())
        || after_host == ":"
}

#[cfg(test)]
mod tests {
    use axum::http::HeaderValue;

    use super::*;

    fn headers(hosts: &[&'static str]) -> HeaderMap {
        let mut headers = HeaderMap::new();
        for host in hosts {
            headers.append(header::HOST, HeaderValue::from_static(host));
        }
        headers
    }

    #[test]
    fn http_1_1_needs_exactly_one_valid_host() {
        let good_hosts =
            [&["example.com"][..], &["127.0.0.1:8080"], &["[::1]:80"], &["[::1]"], &["a:"], &[""]];
        for good in good_hosts {
            assert!(check_host(&headers(good)).is_ok(), "{good:?}");
        }
        let code = |hosts: &[&'static str]| check_host(&headers(hosts)).unwrap_err().code;
        assert_eq!(code(&[]), "missing_host");
        assert_eq!(code(&["a", "b"]), "invalid_host");
        assert_eq!(code(&["user@example.com"]), "invalid_host");
        assert_eq!(code(&["exa mple"]), "invalid_host");
        assert_eq!(code(&["example.com/path"]), "invalid_host");
        for bad_port in ["a:99999", "a:b", "a:-1", "[::1]:x", "a:+80"] {
            assert_eq!(check_host(&headers(&[bad_port])).unwrap_err().code, "invalid_host");
        }
    }

    #[test]
    fn the_header_section_is_counted_as_sent() {
        let mut headers = headers(&["ab"]);
        headers.insert("x-y", HeaderValue::from_static("1"));
        assert_eq!(header_section_bytes(&headers), "host: ab\r\n".len() + "x-y: 1\r\n".len());
    }
}
