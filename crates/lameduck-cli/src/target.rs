//! `http://` URLs: parsing what the user gives and resolving redirect `Location`s.
//!
//! `http::Uri` does the syntax checking; the small amount of RFC 3986 reference resolution
//! needed for `Location` headers is done here rather than by pulling the `url` crate (and
//! its IDNA/Unicode tables) into a helper binary meant for minimal images.

use std::fmt;

use http::Uri;

/// Why a URL was refused.
#[derive(Debug, thiserror::Error)]
pub(crate) enum UrlError {
    /// Not a URL at all.
    #[error("bad URL {input:?}: {source}")]
    Syntax {
        /// What was given.
        input: String,
        /// Why `http::Uri` refused it.
        source: http::uri::InvalidUri,
    },
    /// `https://`: TLS would need a C crypto library or a large dependency tree.
    #[error("bad URL {0:?}: https is not supported (only http://); probe the plain-HTTP port")]
    Https(String),
    /// Any other scheme, or none.
    #[error("bad URL {0:?}: expected an absolute http:// URL")]
    Scheme(String),
    /// `http:///path`.
    #[error("bad URL {0:?}: no host")]
    NoHost(String),
    /// `http://user:pass@host/`: credentials would end up in process listings and events.
    #[error(
        "bad URL {0:?}: credentials in the URL are not supported; use --header 'Authorization: ...'"
    )]
    UserInfo(String),
}

/// An absolute `http://` URL, split the way a request needs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Target {
    /// Host name or IP literal, without IPv6 brackets, as written.
    host: String,
    /// TCP port (80 when absent).
    port: u16,
    /// `host[:port]` as written: the `Host` header.
    authority: String,
    /// Origin-form request target: path (at least `/`) and query.
    path_and_query: String,
}

impl Target {
    /// Parses an absolute `http://` URL. A fragment is dropped (it is never sent).
    pub(crate) fn parse(input: &str) -> Result<Self, UrlError> {
        let without_fragment = input.split_once('#').map_or(input, |(before, _)| before);
        let uri: Uri = without_fragment
            .parse()
            .map_err(|source| UrlError::Syntax {
                input: input.to_owned(),
                source,
            })?;
        match uri.scheme_str() {
            Some(scheme) if scheme.eq_ignore_ascii_case("http") => {}
            Some(scheme) if scheme.eq_ignore_ascii_case("https") => {
                return Err(UrlError::Https(input.to_owned()));
            }
            _ => return Err(UrlError::Scheme(input.to_owned())),
        }
        let authority = uri
            .authority()
            .ok_or_else(|| UrlError::NoHost(input.to_owned()))?;
        if authority.as_str().contains('@') {
            return Err(UrlError::UserInfo(input.to_owned()));
        }
        let host = authority
            .host()
            .trim_start_matches('[')
            .trim_end_matches(']');
        if host.is_empty() {
            return Err(UrlError::NoHost(input.to_owned()));
        }
        let path_and_query = match uri.path_and_query().map(|pq| pq.as_str()) {
            None | Some("") => "/".to_owned(),
            Some(pq) if pq.starts_with('/') => pq.to_owned(),
            Some(pq) => format!("/{pq}"),
        };
        Ok(Self {
            host: host.to_owned(),
            port: authority.port_u16().unwrap_or(80),
            authority: authority.as_str().to_owned(),
            path_and_query,
        })
    }

    /// Resolves a `Location` header value against this URL (RFC 3986 section 5.2).
    pub(crate) fn resolve(&self, location: &str) -> Result<Self, UrlError> {
        let reference = location
            .trim()
            .split_once('#')
            .map_or(location.trim(), |(before, _)| before);
        if has_scheme(reference) {
            return Self::parse(reference);
        }
        if let Some(rest) = reference.strip_prefix("//") {
            return Self::parse(&format!("http://{rest}"));
        }
        let (ref_path, ref_query) = split_query(reference);
        let (base_path, base_query) = split_query(&self.path_and_query);
        let (path, query) = if ref_path.is_empty() {
            (base_path.to_owned(), ref_query.or(base_query))
        } else if ref_path.starts_with('/') {
            (remove_dot_segments(ref_path), ref_query)
        } else {
            // Merge: everything up to the base path's last '/', then the reference.
            let directory = &base_path[..base_path.rfind('/').map_or(0, |slash| slash + 1)];
            (
                remove_dot_segments(&format!("{directory}{ref_path}")),
                ref_query,
            )
        };
        let query = query.map(|q| format!("?{q}")).unwrap_or_default();
        Self::parse(&format!("http://{}{path}{query}", self.authority))
    }

    /// The host a `Location` header value points at, without resolving it fully: this
    /// URL's host for a relative reference, else the host of the absolute (any scheme) or
    /// network-path (`//host/...`) reference. `None` when no host can be made out.
    ///
    /// Lets a redirect to another host be recognised (and left unfollowed, as the kubelet
    /// does) even when it could not be followed anyway, such as `https://other/`.
    pub(crate) fn reference_host(&self, location: &str) -> Option<String> {
        let reference = location.trim();
        let reference = reference
            .split_once('#')
            .map_or(reference, |(before, _)| before);
        let absolute = if has_scheme(reference) {
            reference.to_owned()
        } else if let Some(rest) = reference.strip_prefix("//") {
            format!("http://{rest}")
        } else {
            return Some(self.host.clone());
        };
        let uri: Uri = absolute.parse().ok()?;
        // `http::Uri` reads `mailto:someone` as an authority (host `mailto`): a reference
        // with a scheme must parse as one.
        uri.scheme()?;
        let host = uri
            .authority()?
            .host()
            .trim_start_matches('[')
            .trim_end_matches(']');
        (!host.is_empty()).then(|| host.to_owned())
    }

    /// Host name or IP literal (no brackets).
    pub(crate) fn host(&self) -> &str {
        &self.host
    }

    /// TCP port.
    pub(crate) fn port(&self) -> u16 {
        self.port
    }

    /// `host[:port]` as written, for the `Host` header.
    pub(crate) fn authority(&self) -> &str {
        &self.authority
    }

    /// Path and query, for the request line.
    pub(crate) fn path_and_query(&self) -> &str {
        &self.path_and_query
    }

    /// Whether `host` names this URL's host, ignoring the port: the kubelet's rule for
    /// following a redirect (it compares `URL.Hostname()`). DNS names are case-insensitive.
    /// `host` is given without brackets, as [`Target::reference_host`] returns it.
    pub(crate) fn same_host_name(&self, host: &str) -> bool {
        self.host.eq_ignore_ascii_case(host)
    }
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "http://{}{}", self.authority, self.path_and_query)
    }
}

/// Whether a URI reference starts with `scheme:` (RFC 3986: ALPHA *( ALPHA / DIGIT / "+" /
/// "-" / "." ) ":").
fn has_scheme(reference: &str) -> bool {
    let Some((scheme, _)) = reference.split_once(':') else {
        return false;
    };
    let mut chars = scheme.chars();
    chars.next().is_some_and(|c| c.is_ascii_alphabetic())
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.'))
}

/// Splits `path?query` into its parts.
fn split_query(reference: &str) -> (&str, Option<&str>) {
    match reference.split_once('?') {
        Some((path, query)) => (path, Some(query)),
        None => (reference, None),
    }
}

/// RFC 3986 section 5.2.4 for an absolute path: drops `.` segments and lets `..` remove the
/// previous one, never climbing above the root.
fn remove_dot_segments(path: &str) -> String {
    let segments: Vec<&str> = path.split('/').collect();
    let last = segments.len().saturating_sub(1);
    let mut output: Vec<&str> = Vec::new();
    let mut trailing_slash = false;
    // The first segment is the empty string before the leading '/'.
    for (index, segment) in segments.iter().enumerate().skip(1) {
        match *segment {
            "." => trailing_slash = index == last,
            ".." => {
                output.pop();
                trailing_slash = index == last;
            }
            other => {
                output.push(other);
                trailing_slash = false;
            }
        }
    }
    let mut resolved = format!("/{}", output.join("/"));
    if trailing_slash && !output.is_empty() {
        resolved.push('/');
    }
    resolved
}

#[cfg(test)]
mod tests {
    use super::*;

    fn target(input: &str) -> Target {
        match Target::parse(input) {
            Ok(target) => target,
            Err(err) => panic!("{input}: {err}"),
        }
    }

    #[test]
    fn parses_parts() {
        let t = target("http://Example.com:8080/a/b?x=1#frag");
        assert_eq!(t.host(), "Example.com");
        assert_eq!(t.port(), 8080);
        assert_eq!(t.authority(), "Example.com:8080");
        assert_eq!(t.path_and_query(), "/a/b?x=1");
        assert_eq!(t.to_string(), "http://Example.com:8080/a/b?x=1");

        let t = target("http://127.0.0.1");
        assert_eq!((t.port(), t.path_and_query()), (80, "/"));

        let t = target("http://[::1]:9/healthz");
        assert_eq!((t.host(), t.port(), t.authority()), ("::1", 9, "[::1]:9"));

        let t = target("http://h?q");
        assert_eq!(t.path_and_query(), "/?q");
    }

    #[test]
    fn rejects_what_it_cannot_probe() {
        assert!(matches!(
            Target::parse("https://h/"),
            Err(UrlError::Https(_))
        ));
        assert!(matches!(
            Target::parse("ftp://h/"),
            Err(UrlError::Scheme(_))
        ));
        assert!(matches!(
            Target::parse("/healthz"),
            Err(UrlError::Scheme(_))
        ));
        assert!(matches!(Target::parse("h:80"), Err(UrlError::Scheme(_))));
        assert!(matches!(
            Target::parse("not a url"),
            Err(UrlError::Syntax { .. })
        ));
        assert!(matches!(Target::parse(""), Err(UrlError::Syntax { .. })));
        assert!(matches!(
            Target::parse("http://u:p@h/"),
            Err(UrlError::UserInfo(_))
        ));
    }

    #[test]
    fn resolves_references() {
        let base = target("http://h:1/a/b/c?q=1");
        let cases = [
            ("http://other/x", "http://other/x"),
            ("//other:2/y?z", "http://other:2/y?z"),
            ("/root", "http://h:1/root"),
            ("sib", "http://h:1/a/b/sib"),
            ("./sib/", "http://h:1/a/b/sib/"),
            ("../up", "http://h:1/a/up"),
            ("../../../../top", "http://h:1/top"),
            ("..", "http://h:1/a/"),
            ("?r=2", "http://h:1/a/b/c?r=2"),
            ("", "http://h:1/a/b/c?q=1"),
            ("#frag", "http://h:1/a/b/c?q=1"),
            ("/x/./y/../z#f", "http://h:1/x/z"),
        ];
        for (location, expected) in cases {
            let resolved = base.resolve(location).map(|t| t.to_string());
            assert_eq!(resolved.ok().as_deref(), Some(expected), "{location:?}");
        }
        assert!(matches!(
            base.resolve("https://h/"),
            Err(UrlError::Https(_))
        ));
        assert!(base.resolve("/with space").is_err());
    }

    #[test]
    fn reference_host_names_the_redirect_target_even_when_unfollowable() {
        let base = target("http://Host:1/a/b");
        let cases = [
            ("/x", Some("Host")),
            ("rel?q", Some("Host")),
            ("", Some("Host")),
            ("http://other:2/x", Some("other")),
            ("https://other/x", Some("other")),
            ("HTTPS://host:443/x", Some("host")),
            ("//other/x", Some("other")),
            ("ftp://[::1]:21/", Some("::1")),
            (" http://other/#f ", Some("other")),
            ("mailto:someone", None),
            ("http:///nohost", None),
        ];
        for (location, expected) in cases {
            assert_eq!(
                base.reference_host(location).as_deref(),
                expected,
                "{location:?}"
            );
        }
    }

    #[test]
    fn same_host_ignores_port_and_case() {
        let host = |url: &str| target(url).host().to_owned();
        assert!(target("http://Host:1/").same_host_name(&host("http://host:2/x")));
        assert!(target("http://[::1]:1/").same_host_name(&host("http://[::1]:2/")));
        assert!(!target("http://127.0.0.1:1/").same_host_name(&host("http://localhost:1/")));
    }
}
