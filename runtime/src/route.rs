//! HTTP routes an application declares beside its functions — Convex's
//! `httpRouter`: `app.route(Method::POST, "/webhooks/items", handler)`. A
//! route's handler gets an action's context ([`ActionCtx`]: run queries and
//! mutations, schedule through them) and the raw [`HttpRequest`] (method,
//! path parameters, query string, headers, body bytes), and answers an
//! [`HttpResponse`]; an `Err` is answered with its code's status
//! ([`crate::error::Error::http_status`]).
//!
//! This module owns the table and its matching, and knows nothing of sockets:
//! `server::routes` serves it as the router's fallback, after `/api/*`,
//! `/health` and `/_dashboard` had their chance.
//!
//! **Invariant:** no route answers under a reserved prefix
//! ([`RESERVED_PREFIXES`]): a pattern that names one panics at registration,
//! and the server refuses every request under one before matching, so that
//! not even `/{anything}` reaches `/_dashboard` of a server that has none.
//!
//! Matching is exact, segment by segment: `/{slug}` takes one non-empty
//! segment (percent-decoded), a literal only itself, a trailing slash is a
//! segment of its own. Where two patterns match one path, the one with a
//! literal at the first position where they differ wins (`/a/new` before
//! `/a/{id}`), so the answer never depends on the order of registration.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

pub use axum::body::Bytes;
pub use axum::http::{header, HeaderMap, HeaderName, HeaderValue, Method, StatusCode};
use serde_json::Value as JsonValue;

use crate::context::{ActionCtx, BoxFuture};
use crate::error::{Error, Result};

/// Path prefixes the server keeps for itself (the function API and sync,
/// the dev dashboard, the health check, the writes nodes forward to each
/// other). Each is a whole first segment: `/apiary` is free.
pub const RESERVED_PREFIXES: [&str; 4] = ["/api", "/_dashboard", "/health", "/_node"];

/// How long a browser may cache a preflight answer unless the route says
/// otherwise.
pub const DEFAULT_CORS_MAX_AGE: Duration = Duration::from_secs(600);

/// Whether `path` (a request's) lies under a [`RESERVED_PREFIXES`] entry.
pub fn is_reserved(path: &str) -> bool {
    RESERVED_PREFIXES.iter().any(|prefix| {
        path.strip_prefix(prefix)
            .is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
    })
}

/// A request as a route's handler sees it. The body is whole: the server
/// read it (at most its body limit, within its body timeout) before the
/// route was chosen.
#[derive(Clone, Debug)]
pub struct HttpRequest {
    pub method: Method,
    /// The path as requested (not decoded).
    pub path: String,
    /// The pattern's `{name}` parameters, percent-decoded.
    pub params: BTreeMap<String, String>,
    /// The raw query string, without the `?`.
    pub query: Option<String>,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl HttpRequest {
    /// Path parameter `name`; an internal error if the route's pattern has
    /// none of that name (a programming error, not the client's).
    pub fn param(&self, name: &str) -> Result<&str> {
        self.params
            .get(name)
            .map(String::as_str)
            .ok_or_else(|| Error::internal(format!("the route has no path parameter `{name}`")))
    }

    /// The first query parameter `name`, form-decoded.
    pub fn query_param(&self, name: &str) -> Option<String> {
        let query = self.query.as_deref()?;
        url::form_urlencoded::parse(query.as_bytes())
            .find(|(key, _)| key == name)
            .map(|(_, value)| value.into_owned())
    }

    /// Header `name`, if present and visible ASCII.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// The body as JSON; `INVALID_ARGUMENT` (`400`) saying why not.
    pub fn json(&self) -> Result<JsonValue> {
        serde_json::from_slice(&self.body)
            .map_err(|e| Error::invalid(format!("body: not JSON: {e}")))
    }
}

/// What a route answers.
#[derive(Clone, Debug)]
pub struct HttpResponse {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl HttpResponse {
    /// An empty answer with `status` (a number outside 100–999 is `500`).
    pub fn new(status: u16) -> HttpResponse {
        HttpResponse {
            status: StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
            headers: HeaderMap::new(),
            body: Bytes::new(),
        }
    }

    /// `200` with `value` as `application/json`.
    pub fn json(value: &JsonValue) -> HttpResponse {
        HttpResponse::new(200)
            .with_body(value.to_string())
            .with_header(header::CONTENT_TYPE, "application/json")
    }

    /// `200` with `text` as `text/plain; charset=utf-8`.
    pub fn text(text: impl Into<String>) -> HttpResponse {
        HttpResponse::new(200)
            .with_body(text.into())
            .with_header(header::CONTENT_TYPE, "text/plain; charset=utf-8")
    }

    /// The same answer with another status.
    pub fn with_status(mut self, status: u16) -> HttpResponse {
        self.status = HttpResponse::new(status).status;
        self
    }

    /// The same answer with header `name` set to `value`. A value that is
    /// not a valid header value (a newline in it) is a programming error
    /// and panics, inside the handler, where the server catches it as an
    /// internal error.
    pub fn with_header(mut self, name: HeaderName, value: &str) -> HttpResponse {
        let value = HeaderValue::from_str(value)
            .unwrap_or_else(|e| panic!("header `{name}`: invalid value: {e}"));
        self.headers.insert(name, value);
        self
    }

    /// The same answer with `body`.
    pub fn with_body(mut self, body: impl Into<Bytes>) -> HttpResponse {
        self.body = body.into();
        self
    }
}

/// Which origins a route answers cross-origin requests from.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Origins {
    Any,
    List(Vec<String>),
}

/// A route's CORS policy: the origins allowed, the request headers a
/// preflight allows (`Content-Type` and `Authorization` unless told), and
/// how long a browser may cache the preflight. A route with one is answered
/// `OPTIONS` preflights automatically, and its answers to an allowed
/// `Origin` carry `Access-Control-Allow-Origin`. Credentials (cookies) are
/// never allowed: livebase's auth travels in `Authorization` headers.
#[derive(Clone, Debug)]
pub struct Cors {
    origins: Origins,
    headers: Vec<HeaderName>,
    max_age: Duration,
}

impl Cors {
    /// Every origin (`Access-Control-Allow-Origin: *`).
    pub fn any_origin() -> Cors {
        Cors::with(Origins::Any)
    }

    /// Exactly these origins (`https://app.example.com`, scheme and host and
    /// port as a browser sends them in `Origin`).
    pub fn origins<'a>(origins: impl IntoIterator<Item = &'a str>) -> Cors {
        Cors::with(Origins::List(
            origins.into_iter().map(str::to_string).collect(),
        ))
    }

    fn with(origins: Origins) -> Cors {
        Cors {
            origins,
            headers: vec![header::CONTENT_TYPE, header::AUTHORIZATION],
            max_age: DEFAULT_CORS_MAX_AGE,
        }
    }

    /// The request headers a preflight allows, instead of the default two.
    /// Panics on a name that is not a header name.
    pub fn allow_headers<'a>(mut self, names: impl IntoIterator<Item = &'a str>) -> Cors {
        self.headers = names
            .into_iter()
            .map(|n| HeaderName::try_from(n).unwrap_or_else(|e| panic!("CORS header `{n}`: {e}")))
            .collect();
        self
    }

    /// How long a browser may cache a preflight answer.
    pub fn max_age(mut self, max_age: Duration) -> Cors {
        self.max_age = max_age;
        self
    }

    /// The `Access-Control-Allow-Origin` value for a request from `origin`,
    /// or `None` if that origin is not allowed.
    pub fn allow_origin(&self, origin: &str) -> Option<HeaderValue> {
        match &self.origins {
            Origins::Any => Some(HeaderValue::from_static("*")),
            Origins::List(list) if list.iter().any(|o| o == origin) => {
                HeaderValue::from_str(origin).ok()
            }
            Origins::List(_) => None,
        }
    }

    /// The headers a preflight allows, joined for `Access-Control-Allow-Headers`.
    pub fn allowed_headers(&self) -> String {
        let names: Vec<&str> = self.headers.iter().map(HeaderName::as_str).collect();
        names.join(", ")
    }

    pub fn max_age_secs(&self) -> u64 {
        self.max_age.as_secs()
    }

    /// Whether the allowed origin depends on the request's (then answers
    /// vary by `Origin` and must say so to caches).
    pub fn varies_by_origin(&self) -> bool {
        matches!(self.origins, Origins::List(_))
    }
}

/// A route's code.
pub type RouteHandler =
    Arc<dyn Fn(ActionCtx, HttpRequest) -> BoxFuture<Result<HttpResponse>> + Send + Sync>;

#[derive(Clone, Debug, PartialEq, Eq)]
enum Segment {
    Literal(String),
    Param(String),
}

/// One declared route; [`Route::cors`] sets its CORS policy.
#[derive(Clone)]
pub struct Route {
    method: Method,
    pattern: String,
    segments: Vec<Segment>,
    handler: RouteHandler,
    cors: Option<Cors>,
}

impl Route {
    /// Answers cross-origin requests under `cors` (and their preflights).
    pub fn cors(&mut self, cors: Cors) -> &mut Route {
        self.cors = Some(cors);
        self
    }

    pub fn method(&self) -> &Method {
        &self.method
    }

    /// The path as declared, `{name}` parameters included.
    pub fn pattern(&self) -> &str {
        &self.pattern
    }

    pub fn handler(&self) -> &RouteHandler {
        &self.handler
    }

    pub fn cors_policy(&self) -> Option<&Cors> {
        self.cors.as_ref()
    }

    /// The parameters of `path` (split in segments) if this route's pattern
    /// matches it.
    fn matches(&self, path: &[&str]) -> Option<BTreeMap<String, String>> {
        if path.len() != self.segments.len() {
            return None;
        }
        let mut params = BTreeMap::new();
        for (segment, part) in self.segments.iter().zip(path) {
            match segment {
                Segment::Literal(literal) if literal == part => {}
                Segment::Literal(_) => return None,
                Segment::Param(name) => {
                    let value = percent_decode(part).filter(|v| !v.is_empty())?;
                    params.insert(name.clone(), value);
                }
            }
        }
        Some(params)
    }

    /// Whether two patterns match exactly the same paths.
    fn same_shape(&self, other: &Route) -> bool {
        self.segments.len() == other.segments.len()
            && self
                .segments
                .iter()
                .zip(&other.segments)
                .all(|pair| match pair {
                    (Segment::Literal(a), Segment::Literal(b)) => a == b,
                    (Segment::Param(_), Segment::Param(_)) => true,
                    _ => false,
                })
    }

    /// Sort key for precedence: literals before parameters, position by
    /// position.
    fn precedence(&self) -> Vec<bool> {
        self.segments
            .iter()
            .map(|s| matches!(s, Segment::Param(_)))
            .collect()
    }
}

/// What a request's method and path find among the routes.
pub enum Found<'r> {
    /// The route, with the path's parameters.
    Route(&'r Route, BTreeMap<String, String>),
    /// Routes match the path, none for this method; their methods.
    OtherMethods(Vec<Method>),
    /// No route matches the path.
    Nothing,
}

/// An application's routes.
#[derive(Clone, Default)]
pub struct Routes {
    routes: Vec<Route>,
}

impl Routes {
    /// Declares a route. Panics — registration's way of reporting a
    /// programming error — on a malformed pattern, one under a reserved
    /// prefix, or a method and pattern already declared (parameter names
    /// aside: `/a/{x}` and `/a/{y}` are the same route).
    pub fn add(&mut self, method: Method, pattern: &str, handler: RouteHandler) -> &mut Route {
        let segments =
            parse_pattern(pattern).unwrap_or_else(|e| panic!("route `{method} {pattern}`: {e}"));
        if let Some(Segment::Literal(first)) = segments.first() {
            let reserved = format!("/{first}");
            assert!(
                !RESERVED_PREFIXES.contains(&reserved.as_str()),
                "route `{method} {pattern}`: `{reserved}` is reserved for the server \
                 (reserved: {})",
                RESERVED_PREFIXES.join(", ")
            );
        }
        let route = Route {
            method,
            pattern: pattern.to_string(),
            segments,
            handler,
            cors: None,
        };
        if let Some(existing) = self
            .routes
            .iter()
            .find(|r| r.method == route.method && r.same_shape(&route))
        {
            panic!(
                "route `{} {pattern}` is registered twice (as `{}` already)",
                route.method, existing.pattern
            );
        }
        self.routes.push(route);
        let last = self.routes.len() - 1;
        &mut self.routes[last]
    }

    pub fn iter(&self) -> impl Iterator<Item = &Route> {
        self.routes.iter()
    }

    pub fn is_empty(&self) -> bool {
        self.routes.is_empty()
    }

    /// The route for `method` and `path` (a request's path, no query).
    pub fn find(&self, method: &Method, path: &str) -> Found<'_> {
        let Some(rest) = path.strip_prefix('/') else {
            return Found::Nothing;
        };
        let parts: Vec<&str> = if rest.is_empty() {
            Vec::new()
        } else {
            rest.split('/').collect()
        };
        let mut best: Option<(&Route, BTreeMap<String, String>)> = None;
        let mut others = Vec::new();
        for route in &self.routes {
            let Some(params) = route.matches(&parts) else {
                continue;
            };
            if route.method != *method {
                if !others.contains(&route.method) {
                    others.push(route.method.clone());
                }
                continue;
            }
            if best
                .as_ref()
                .is_none_or(|(b, _)| route.precedence() < b.precedence())
            {
                best = Some((route, params));
            }
        }
        match best {
            Some((route, params)) => Found::Route(route, params),
            None if others.is_empty() => Found::Nothing,
            None => Found::OtherMethods(others),
        }
    }
}

/// A route's pattern: `/` or `/seg/{param}/…`, no empty segment, parameter
/// names of letters, digits and `_`, each used once.
fn parse_pattern(pattern: &str) -> Result<Vec<Segment>, String> {
    let rest = pattern
        .strip_prefix('/')
        .ok_or("a pattern starts with `/`")?;
    if rest.is_empty() {
        return Ok(Vec::new());
    }
    let mut segments = Vec::new();
    for part in rest.split('/') {
        if part.is_empty() {
            return Err("empty segment (`//`, or a trailing `/`)".into());
        }
        if let Some(name) = part.strip_prefix('{').and_then(|p| p.strip_suffix('}')) {
            let valid =
                !name.is_empty() && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_');
            if !valid {
                return Err(format!(
                    "`{part}`: a parameter is `{{name}}`, letters, digits and `_`"
                ));
            }
            if segments.contains(&Segment::Param(name.to_string())) {
                return Err(format!("parameter `{name}` appears twice"));
            }
            segments.push(Segment::Param(name.to_string()));
        } else if part.contains(['{', '}', '?', '#', '*']) {
            return Err(format!("`{part}`: a literal segment has no `{{}}?#*`"));
        } else {
            segments.push(Segment::Literal(part.to_string()));
        }
    }
    Ok(segments)
}

/// `%XX`-decodes a path segment; `None` if malformed or not UTF-8.
fn percent_decode(segment: &str) -> Option<String> {
    let bytes = segment.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = bytes.get(i + 1..i + 3)?;
            let hex = std::str::from_utf8(hex).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn handler() -> RouteHandler {
        Arc::new(|_, _| Box::pin(async { Ok(HttpResponse::new(204)) }))
    }

    fn table(routes: &[(Method, &str)]) -> Routes {
        let mut t = Routes::default();
        for (method, pattern) in routes {
            t.add(method.clone(), pattern, handler());
        }
        t
    }

    fn found(t: &Routes, method: Method, path: &str) -> Option<(String, Vec<(String, String)>)> {
        match t.find(&method, path) {
            Found::Route(r, params) => {
                Some((r.pattern().to_string(), params.into_iter().collect()))
            }
            _ => None,
        }
    }

    #[test]
    fn parameters_take_one_decoded_segment_and_literals_win() {
        let t = table(&[
            (Method::GET, "/orgs/{slug}"),
            (Method::GET, "/orgs/new"),
            (Method::GET, "/orgs/{slug}/items/{id}"),
            (Method::GET, "/"),
        ]);
        let p = |k: &str, v: &str| (k.to_string(), v.to_string());
        assert_eq!(
            found(&t, Method::GET, "/orgs/a%20b"),
            Some(("/orgs/{slug}".into(), vec![p("slug", "a b")]))
        );
        assert_eq!(
            found(&t, Method::GET, "/orgs/new"),
            Some(("/orgs/new".into(), vec![]))
        );
        assert_eq!(
            found(&t, Method::GET, "/orgs/x/items/7"),
            Some((
                "/orgs/{slug}/items/{id}".into(),
                vec![p("id", "7"), p("slug", "x")]
            ))
        );
        assert_eq!(found(&t, Method::GET, "/"), Some(("/".into(), vec![])));
        for miss in [
            "/orgs",
            "/orgs/",
            "/orgs/a/",
            "/orgs//items/1",
            "/orgs/%zz",
            "/other",
        ] {
            assert!(found(&t, Method::GET, miss).is_none(), "{miss}");
        }
        assert!(matches!(
            t.find(&Method::POST, "/orgs/x"),
            Found::OtherMethods(m) if m == [Method::GET]
        ));
    }

    #[test]
    fn reserved_prefixes_are_whole_segments() {
        for path in [
            "/api",
            "/api/x",
            "/_dashboard/",
            "/health",
            "/_node/mutation",
        ] {
            assert!(is_reserved(path), "{path}");
        }
        for path in ["/apiary", "/healthy", "/", "/x/api"] {
            assert!(!is_reserved(path), "{path}");
        }
    }

    #[test]
    fn malformed_patterns_are_refused() {
        for pattern in [
            "no-slash", "/a//b", "/a/", "/{}", "/{a-b}", "/{x}/{x}", "/a*",
        ] {
            assert!(parse_pattern(pattern).is_err(), "{pattern}");
        }
    }
}
