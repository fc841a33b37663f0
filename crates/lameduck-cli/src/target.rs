//! `http://` URLs: parsing what the user gives and resolving redirect `Location`s.
//!
//! `http::Uri` does the syntax checking; the small amount of RFC 3986 reference resolution
//! needed for `Location` headers is done here rather than by pulling the `url` crate (and
//! its IDNA/Unicode tables) into a helper binary meant for minimal images.

use std::fmt;

use http::Uri;

/// Why a URL was refused. Every variant shows the URL as given but with any userinfo
/// (`user:password@`) replaced by `***@` (see [`redact`]): the messages end up on stderr,
/// in the pod's events and logs.
#[derive(Debug, thiserror::Error)]
pub(crate) enum UrlError {
    /// Not a URL at all.
    #[error("bad URL {shown:?}: {source}")]
    Syntax {
        /// What was given, redacted.
        shown: String,
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
        "bad URL {0:?}: credentials in the URL are not supported; use --header 'Authorization: ...' (an @ in a path or query is written %40)"
    )]
    UserInfo(String),
    /// `http://host:99999/`, `http://host:abc/`: a port that is not a number from 1 to
    /// 65535. Never read as "no port" (which would mean port 80).
    #[error("bad URL {shown:?}: {}", port_problem(.port.as_deref()))]
    Port {
        /// What was given, redacted.
        shown: String,
        /// The port as written; `None` when it may be part of a password (the URL has an
        /// `@` after its authority, as in `http://user:pa/ss@host/`) and so is not shown.
        port: Option<String>,
    },
}

impl UrlError {
    /// Whether this is a bad port: a usage error wherever the URL comes from the command
    /// line.
    pub(crate) fn is_bad_port(&self) -> bool {
        matches!(self, Self::Port { .. })
    }
}

/// The reason part of [`UrlError::Port`]'s message.
fn port_problem(port: Option<&str>) -> String {
    match port {
        Some(port) => format!("port {port:?} is not a number from 1 to 65535"),
        None => "its port is not a number from 1 to 65535".to_owned(),
    }
}

/// `input` with everything from after its `scheme://` (or its start, without one) up to its
/// last `@` replaced by `***`, for messages: `http://user:pw@host/` becomes `http://***@host/`.
///
/// Deliberately broader than the userinfo proper: a password with an unescaped `/`, `?`
/// or `#` ends the authority early (`http://user:pa/ss@host/` has authority `user:pa`),
/// yet it is still a password, so the last `@` of the whole input is taken. A URL with an
/// `@` in its path or query is shown with more hidden than necessary, never less.
pub(crate) fn redact(input: &str) -> String {
    // After `scheme://` or a leading `//`; else from the start (`user:pw@host/`): a `//`
    // inside a password must not end the hidden part early.
    let start = match input.split_once("://") {
        Some((scheme, _)) if is_scheme(scheme) => scheme.len() + 3,
        _ if input.starts_with("//") => 2,
        _ => 0,
    };
    match input[start..].rfind('@') {
        Some(at) => format!("{}***{}", &input[..start], &input[start + at..]),
        None => input.to_owned(),
    }
}

/// [`UrlError::Port`] for `input`, whose port as written is `port`. The port is named
/// unless [`redact`] hides part of `input`: an `@` after the authority means the "port"
/// may be a piece of a password (`http://user:pa/ss@host/`).
fn port_error(input: &str, port: Option<&str>) -> UrlError {
    let shown = redact(input);
    let port = (shown == input).then(|| port.unwrap_or("").to_owned());
    UrlError::Port { shown, port }
}

/// A network-path reference (`//host/...`) as the `http://` URL it means; anything else
/// as it is.
fn network_path_as_http(reference: &str) -> std::borrow::Cow<'_, str> {
    if reference.starts_with("//") {
        format!("http:{reference}").into()
    } else {
        reference.into()
    }
}

/// The parts of an authority, `[userinfo@]host[:port]`, split as RFC 3986 does (shared
/// with `grpc://` URLs, [`crate::grpc_target`]).
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct AuthorityParts<'a> {
    /// Everything before the last `@`.
    pub(crate) userinfo: Option<&'a str>,
    /// The host, IPv6 brackets included.
    pub(crate) host: &'a str,
    /// Everything after the host's `:` (for an unbracketed host, its first `:`), possibly
    /// empty; `None` without a `:`.
    pub(crate) port: Option<&'a str>,
}

impl<'a> AuthorityParts<'a> {
    /// Splits an authority. Never fails: what is not a valid host or port is judged later.
    pub(crate) fn split(authority: &'a str) -> Self {
        let (userinfo, host_port) = match authority.rfind('@') {
            Some(at) => (Some(&authority[..at]), &authority[at + 1..]),
            None => (None, authority),
        };
        let (host, port) = if host_port.starts_with('[')
            && let Some(close) = host_port.find(']')
        {
            let (host, rest) = host_port.split_at(close + 1);
            (host, rest.strip_prefix(':'))
        } else {
            match host_port.split_once(':') {
                Some((host, port)) => (host, Some(port)),
                None => (host_port, None),
            }
        };
        Self {
            userinfo,
            host,
            port,
        }
    }

    /// The host without IPv6 brackets.
    pub(crate) fn bare_host(&self) -> &'a str {
        self.host.trim_start_matches('[').trim_end_matches(']')
    }
}

/// The authority of an absolute URL with an authority (`scheme://authority...`): what
/// follows `//`, up to the first `/`, `?` or `#`. `None` for anything else.
fn authority_of(url: &str) -> Option<&str> {
    let (scheme, rest) = url.split_once("://")?;
    if !is_scheme(scheme) {
        return None;
    }
    let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    Some(&rest[..end])
}

/// Checks a port as written: absent or empty means the default, else it must be decimal
/// digits only with a value from 1 to 65535 (port 0 cannot be connected to). Go's URL
/// parser also refuses non-digits; values above 65535 it leaves to the dialer, which fails.
pub(crate) fn check_port(port: Option<&str>) -> Result<Option<u16>, ()> {
    match port {
        None | Some("") => Ok(None),
        Some(digits) if digits.bytes().all(|b| b.is_ascii_digit()) => {
            // Leading zeros are allowed (`:0080` is 80), as in Go.
            let significant = digits.trim_start_matches('0');
            match significant.parse::<u16>() {
                Ok(port) if port > 0 => Ok(Some(port)),
                _ => Err(()),
            }
        }
        Some(_) => Err(()),
    }
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

/// What to do with a redirect's `Location`, by the kubelet's rules (see
/// [`Target::redirect`]).
#[derive(Debug)]
pub(crate) enum Redirect {
    /// Same host name (any port): follow it to this URL.
    Follow(Target),
    /// Another host: not followed; its 3xx answer is the result. The `Location` as shown
    /// in messages: absolute, or as given when it is not `http://`; redacted.
    OtherHost(String),
    /// A `Location` that cannot be followed: a port that is not a port (whatever the host),
    /// `https://` on the same host, bad syntax, credentials...
    Invalid(UrlError),
}

impl Target {
    /// Parses an absolute `http://` URL. A fragment is dropped (it is never sent).
    ///
    /// Refused: other schemes, credentials (`user:pw@`), and a port that is not a number
    /// from 1 to 65535 (`:99999`, `:abc`), which must never fall back to port 80. Messages
    /// never show the userinfo.
    ///
    /// An `@` anywhere before the fragment is refused too, not only in the authority: a
    /// password with an unescaped `/`, `?` or `#` (`http://user:pa/ss@host/`) would
    /// otherwise move the host, or even be sent as a path, and be printed in logs. An `@`
    /// meant for a path or query is written `%40`.
    pub(crate) fn parse(input: &str) -> Result<Self, UrlError> {
        Self::parse_as(input, true)
    }

    /// [`Target::parse`]; `command_line` is false for a redirect's `Location`, where an
    /// `@` in the path or query is the server's business (only userinfo is refused).
    fn parse_as(input: &str, command_line: bool) -> Result<Self, UrlError> {
        let without_fragment = input.split_once('#').map_or(input, |(before, _)| before);
        if command_line && without_fragment.contains('@') {
            return Err(UrlError::UserInfo(redact(input)));
        }
        // Credentials and the port first, on the text itself: `http::Uri` refuses some bad
        // ports only as a syntax error, and reads others (`:99999`) as no port at all.
        if let Some(authority) = authority_of(without_fragment) {
            let parts = AuthorityParts::split(authority);
            let is_http = without_fragment
                .get(..7)
                .is_some_and(|scheme| scheme.eq_ignore_ascii_case("http://"));
            if parts.userinfo.is_some() {
                return Err(UrlError::UserInfo(redact(input)));
            }
            if is_http && check_port(parts.port).is_err() {
                return Err(port_error(input, parts.port));
            }
        }
        let uri: Uri = without_fragment
            .parse()
            .map_err(|source| UrlError::Syntax {
                shown: redact(input),
                source,
            })?;
        match uri.scheme_str() {
            Some(scheme) if scheme.eq_ignore_ascii_case("http") => {}
            Some(scheme) if scheme.eq_ignore_ascii_case("https") => {
                return Err(UrlError::Https(redact(input)));
            }
            _ => return Err(UrlError::Scheme(redact(input))),
        }
        let authority = uri
            .authority()
            .ok_or_else(|| UrlError::NoHost(redact(input)))?;
        let parts = AuthorityParts::split(authority.as_str());
        if parts.userinfo.is_some() {
            return Err(UrlError::UserInfo(redact(input)));
        }
        let port = check_port(parts.port).map_err(|()| port_error(input, parts.port))?;
        let host = parts.bare_host();
        if host.is_empty() {
            return Err(UrlError::NoHost(redact(input)));
        }
        let path_and_query = match uri.path_and_query().map(|pq| pq.as_str()) {
            None | Some("") => "/".to_owned(),
            Some(pq) if pq.starts_with('/') => pq.to_owned(),
            Some(pq) => format!("/{pq}"),
        };
        Ok(Self {
            host: host.to_owned(),
            port: port.unwrap_or(80),
            authority: authority.as_str().to_owned(),
            path_and_query,
        })
    }

    /// Decides what to do with a redirect from this URL to `location`, by the kubelet's
    /// rules, in this order:
    ///
    /// 1. a `Location` whose port is not a number from 1 to 65535 is invalid, whatever its
    ///    host or scheme: never port 80, and a failure rather than a silent success;
    /// 2. another host *name* (the port may differ): not followed;
    /// 3. otherwise it is followed if it resolves to a usable `http://` URL, which then has
    ///    this URL's host name (compared as [`Target::same_host_name`] does).
    pub(crate) fn redirect(&self, location: &str) -> Redirect {
        let reference = location.trim();
        let reference = reference
            .split_once('#')
            .map_or(reference, |(before, _)| before);
        let absolute = network_path_as_http(reference);
        if let Some(authority) = authority_of(&absolute) {
            let port = AuthorityParts::split(authority).port;
            if check_port(port).is_err() {
                return Redirect::Invalid(port_error(location.trim(), port));
            }
        }
        let resolved = self.resolve(location);
        if let Some(host) = self.reference_host(location)
            && !self.same_host_name(&host)
        {
            let shown = match &resolved {
                Ok(next) => next.to_string(),
                Err(_) => redact(location.trim()),
            };
            return Redirect::OtherHost(shown);
        }
        match resolved {
            Ok(next) if self.same_host_name(next.host()) => Redirect::Follow(next),
            // Unreachable as long as `reference_host` and `resolve` agree; kept as a guard:
            // a redirect is never followed to another host.
            Ok(next) => Redirect::OtherHost(next.to_string()),
            Err(err) => Redirect::Invalid(err),
        }
    }

    /// Resolves a `Location` header value against this URL (RFC 3986 section 5.2).
    pub(crate) fn resolve(&self, location: &str) -> Result<Self, UrlError> {
        let reference = location
            .trim()
            .split_once('#')
            .map_or(location.trim(), |(before, _)| before);
        if has_scheme(reference) {
            return Self::parse_as(reference, false);
        }
        if let Some(rest) = reference.strip_prefix("//") {
            return Self::parse_as(&format!("http://{rest}"), false);
        }
        let (ref_path, ref_query) = split_query(reference);
        // RFC 3986 4.2: the first segment of a relative-path reference cannot have a colon
        // (`:x@h`, `1a:b` are malformed, not paths); Go's parser refuses them too.
        if ref_path
            .split('/')
            .next()
            .is_some_and(|first| first.contains(':'))
        {
            return Err(UrlError::Scheme(redact(reference)));
        }
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
        Self::parse_as(&format!("http://{}{path}{query}", self.authority), false)
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
        // Split as `parse` splits, so that the two always agree on the host.
        let host = AuthorityParts::split(uri.authority()?.as_str()).bare_host();
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
    reference
        .split_once(':')
        .is_some_and(|(scheme, _)| is_scheme(scheme))
}

/// Whether `scheme` is a URI scheme (RFC 3986: ALPHA *( ALPHA / DIGIT / "+" / "-" / "." )).
fn is_scheme(scheme: &str) -> bool {
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
        assert!(matches!(base.resolve(":x@h"), Err(UrlError::Scheme(_))));
        assert!(matches!(base.resolve("1a:b/c"), Err(UrlError::Scheme(_))));
        assert!(base.resolve("./1a:b").is_ok());
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

    #[test]
    fn a_port_that_is_not_a_port_is_refused_naming_it() {
        for (url, port) in [
            ("http://127.0.0.1:99999/", "99999"),
            ("http://127.0.0.1:65536/livez", "65536"),
            ("http://127.0.0.1:abc/", "abc"),
            ("http://[::1]:70000/", "70000"),
            ("http://h:0/", "0"),
            ("http://h:+80/", "+80"),
            ("http://h:-1/", "-1"),
            ("http://h:80:90/", "80:90"),
            ("HTTP://h:1 2/", "1 2"),
            (
                "http://h:99999999999999999999999/",
                "99999999999999999999999",
            ),
        ] {
            let err = Target::parse(url).err();
            assert!(matches!(err, Some(UrlError::Port { .. })), "{url}: {err:?}");
            let message = err.map(|e| e.to_string()).unwrap_or_default();
            assert!(message.contains(&format!("port {port:?}")), "{message}");
        }
        // What is a port: absent or empty (the default), digits, leading zeros.
        for (url, port) in [
            ("http://h/", 80),
            ("http://h:/", 80),
            ("http://h:65535/", 65535),
            ("http://h:0080/", 80),
            ("http://[::1]/", 80),
            ("http://[::1]:1/", 1),
        ] {
            assert_eq!(target(url).port(), port, "{url}");
        }
    }

    #[test]
    fn credentials_are_never_shown() {
        for url in [
            "http://user:hunter22@h/",
            "http://user:hunter22@h:99999/",
            "https://user:hunter22@h/",
            "user:hunter22@h/",
            "//user:hunter22@h/",
            "http://user:hunter22/x@h/",
            "http://user:hunter22#x@h/",
            "http://user:hunter22?x@h/",
            "http://user:hunter22 x@h/",
            "user:hun//hunter22@h/",
            "http://user:/hunter22@h/",
            "http://user:123/hunter22@h/",
            "http://user:?hunter22@h/",
        ] {
            let message = Target::parse(url).map(|t| t.to_string());
            let message = message.unwrap_or_else(|e| e.to_string());
            assert!(!message.contains("hunter22"), "{url}: {message}");
            assert!(message.contains("***@"), "{url}: {message}");
        }
        assert_eq!(redact("http://u:p@h/x"), "http://***@h/x");
        assert_eq!(redact("http://h/x"), "http://h/x");
    }

    #[test]
    fn redirects_follow_the_same_host_only_and_never_to_a_bad_port() {
        let base = target("http://Host:1/a/b");
        let follows = |location: &str| match base.redirect(location) {
            Redirect::Follow(next) => Some(next.to_string()),
            _ => None,
        };
        assert_eq!(follows("/x").as_deref(), Some("http://Host:1/x"));
        assert_eq!(
            follows("http://host:2/y").as_deref(),
            Some("http://host:2/y")
        );
        assert!(matches!(
            base.redirect("http://other/"),
            Redirect::OtherHost(shown) if shown == "http://other/"
        ));
        assert!(matches!(
            base.redirect("http://u:secret@other/"),
            Redirect::OtherHost(shown) if shown == "http://***@other/"
        ));
        for location in [
            "http://host:99999/",
            "//host:abc/",
            "http://other:70000/",
            "https://other:65536/",
        ] {
            let redirect = base.redirect(location);
            let Redirect::Invalid(err) = redirect else {
                panic!("{location}: {redirect:?}");
            };
            assert!(err.is_bad_port(), "{location}: {err}");
        }
    }

    mod properties {
        use super::*;
        use proptest::prelude::*;

        fn config() -> ProptestConfig {
            ProptestConfig {
                cases: 512,
                failure_persistence: None,
                ..ProptestConfig::default()
            }
        }

        /// Strings that look more or less like URLs and references.
        fn url_like() -> impl Strategy<Value = String> {
            prop_oneof![
                any::<String>(),
                "(https?:|HTTP:|ftp:|mailto:)?(//)?[a-zA-Z0-9.:@\\[\\]%/?#+ -]{0,40}",
            ]
        }

        /// A host as written in a URL: names, IPv4 and bracketed IPv6 literals.
        fn host() -> impl Strategy<Value = String> {
            prop_oneof![
                "[a-zA-Z][a-zA-Z0-9-]{0,10}(\\.[a-z]{1,5}){0,2}",
                (any::<u8>(), any::<u8>()).prop_map(|(a, b)| format!("10.0.{a}.{b}")),
                Just("[::1]".to_owned()),
                any::<u16>().prop_map(|x| format!("[fd00::{x:x}]")),
            ]
        }

        /// A path and query (possibly empty), without `@`.
        fn path() -> impl Strategy<Value = String> {
            "(/[a-zA-Z0-9._~-]{0,8}){0,3}(\\?[a-z0-9=&]{0,8})?"
        }

        /// A port that is not a number from 1 to 65535: too large, or not digits only.
        fn bad_port() -> impl Strategy<Value = String> {
            prop_oneof![
                (65536..=u64::MAX).prop_map(|p| p.to_string()),
                Just("0".to_owned()),
                "[^/?#@]{1,10}".prop_filter("not digits only", |p| {
                    !p.bytes().all(|b| b.is_ascii_digit())
                }),
            ]
        }

        /// A password unlikely to appear in a message by chance, with no character that
        /// `{:?}` escapes (so that an echo would be seen as is).
        fn secret() -> impl Strategy<Value = String> {
            "[!#-\\[\\]-~]{10,20}"
        }

        proptest! {
            #![proptest_config(config())]

            #[test]
            fn arbitrary_input_never_panics(input in url_like(), base in url_like()) {
                let _ = redact(&input);
                if let Ok(url) = Target::parse(&input) {
                    let _ = url.to_string();
                }
                let base = Target::parse(&base)
                    .unwrap_or_else(|_| target("http://h:1/a/b?q"));
                let _ = base.resolve(&input);
                let _ = base.reference_host(&input);
                let _ = base.redirect(&input);
            }

            #[test]
            fn an_accepted_port_is_the_one_written(
                host in host(),
                port in proptest::option::of(1..=u16::MAX),
                zeros in 0..3_usize,
                path in path(),
            ) {
                let written = port.map(|p| format!(":{}{p}", "0".repeat(zeros)));
                let url = format!("http://{host}{}{path}", written.unwrap_or_default());
                let parsed = Target::parse(&url);
                prop_assert!(parsed.is_ok(), "{url}: {parsed:?}");
                if let Ok(parsed) = parsed {
                    prop_assert_eq!(parsed.port(), port.unwrap_or(80), "{}", url);
                    prop_assert_eq!(parsed.host(), host.trim_start_matches('[').trim_end_matches(']'));
                }
            }

            #[test]
            fn any_accepted_url_has_the_port_of_its_authority(input in url_like()) {
                if let Ok(url) = Target::parse(&input) {
                    let written = AuthorityParts::split(url.authority()).port;
                    let expected = match written {
                        None | Some("") => 80,
                        Some(digits) => digits.trim_start_matches('0').parse().unwrap_or(0),
                    };
                    prop_assert_eq!(url.port(), expected, "{}", input);
                    prop_assert!(url.port() != 0);
                }
            }

            #[test]
            fn a_bad_port_is_always_refused_naming_it(
                host in host(),
                port in bad_port(),
                path in path(),
            ) {
                let url = format!("http://{host}:{port}{path}");
                let named = format!("{port:?}");
                let err = Target::parse(&url).err();
                prop_assert!(err.as_ref().is_some_and(UrlError::is_bad_port), "{url}: {err:?}");
                let message = err.map(|e| e.to_string()).unwrap_or_default();
                prop_assert!(message.contains(&named), "{message}");

                // The same as a redirect, absolute or network-path, to this host or another.
                let base = target("http://base.example:8080/a/b");
                // (A path after the port: a `Location` is trimmed of blanks, as HTTP says.)
                for location in [
                    format!("http://{host}:{port}/r{path}"),
                    format!("//{host}:{port}/r{path}"),
                ] {
                    match base.redirect(&location) {
                        Redirect::Invalid(err) => {
                            prop_assert!(err.is_bad_port(), "{location}: {err}");
                            prop_assert!(err.to_string().contains(&named), "{location}: {err}");
                        }
                        other => prop_assert!(false, "{location}: {other:?}"),
                    }
                }
            }

            #[test]
            fn userinfo_never_appears_in_a_message(
                prefix in prop_oneof![
                    Just("http://"), Just("HTTP://"), Just("https://"), Just("//"), Just(""),
                ],
                user in "[a-z]{0,8}",
                secret in secret(),
                rest in prop_oneof![
                    (host(), proptest::option::of(any::<u32>()), path())
                        .prop_map(|(h, p, path)| format!(
                            "{h}{}{path}",
                            p.map(|p| format!(":{p}")).unwrap_or_default()
                        )),
                    "[ -~]{0,20}",
                ],
            ) {
                let url = format!("{prefix}{user}:{secret}@{rest}");
                let message = match Target::parse(&url) {
                    Ok(parsed) => parsed.to_string(),
                    Err(err) => err.to_string(),
                };
                prop_assert!(!message.contains(&secret), "{url}: {message}");
                prop_assert!(!redact(&url).contains(&secret));
            }

            #[test]
            fn userinfo_in_a_redirect_never_appears_in_a_message(
                prefix in prop_oneof![
                    Just("http://"), Just("HTTP://"), Just("https://"), Just("//"), Just(""),
                ],
                user in "[a-z]{0,8}",
                // Userinfo proper: a `/`, `?` or `#` would end the authority, making the
                // rest a path, which a server may well send.
                secret in secret().prop_filter("userinfo", |s| !s.contains(['/', '?', '#'])),
                rest in prop_oneof![
                    (host(), proptest::option::of(any::<u32>()), path())
                        .prop_map(|(h, p, path)| format!(
                            "{h}{}{path}",
                            p.map(|p| format!(":{p}")).unwrap_or_default()
                        )),
                    "[ -~]{0,20}",
                ],
            ) {
                let url = format!("{prefix}{user}:{secret}@{rest}");
                // Whatever is done with it, nothing shown has the password.
                let base = target("http://h:1/a/b");
                let shown = match base.redirect(&url) {
                    Redirect::Follow(next) => next.to_string(),
                    Redirect::OtherHost(shown) => shown,
                    Redirect::Invalid(err) => format!("{} {err}", redact(&url)),
                };
                prop_assert!(!shown.contains(&secret), "{url}: {shown}");
            }

            #[test]
            fn a_redirect_is_followed_only_to_the_same_host(
                base_host in host(),
                location in prop_oneof![
                    url_like(),
                    (host(), path()).prop_map(|(h, p)| format!("http://{h}{p}")),
                    (host(), path()).prop_map(|(h, p)| format!("//{h}:7{p}")),
                ],
            ) {
                let base = target(&format!("http://{base_host}:1/a/b?q"));
                if let Redirect::Follow(next) = base.redirect(&location) {
                    prop_assert!(
                        next.host().eq_ignore_ascii_case(base.host()),
                        "{location:?}: {base} -> {next}"
                    );
                    // A followed redirect has a real port: the one written, or 80.
                    prop_assert!(next.port() != 0);
                }
            }
        }
    }
}
