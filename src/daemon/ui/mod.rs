//! The web dashboard at `/ui` (docs/dashboard.md): three static files,
//! compiled into the binary, that read and steer rollouts through the
//! public API with the user's bearer token. Nothing here reads state or
//! checks a token: the files are the same for everyone, and every data
//! call the page makes goes through `api.rs` and its checks.
//!
//! The page keeps the token in memory (or the tab's `sessionStorage` when
//! asked) and sends it as `Authorization: Bearer`; no cookie is ever set,
//! so no other site can make the browser act with it (no CSRF). Every
//! answer here carries a Content-Security-Policy that allows only these
//! files (no inline script or style, no other origin, no framing).

use std::sync::Arc;

use axum::Router;
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde::Serialize;

use super::Shared;

const INDEX_HTML: &str = include_str!("index.html");
const APP_JS: &str = include_str!("app.js");
const APP_CSS: &str = include_str!("app.css");

/// Scripts, styles and fetches from this origin only; no inline code, no
/// plugins, no `<base>`, no form posts, no framing.
pub const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; script-src 'self'; \
     style-src 'self'; connect-src 'self'; img-src 'self' data:; base-uri 'none'; \
     form-action 'none'; frame-ancestors 'none'";

/// `GET /v1/whoami`: who the token is and its roles.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct WhoAmI {
    pub actor: String,
    /// `viewer`, `operator`, `approver:<role>`, `admin`.
    pub roles: Vec<String>,
}

/// Adds `/ui`, `/ui/` and its files to the API's router.
pub fn routes(router: Router<Arc<Shared>>) -> Router<Arc<Shared>> {
    router
        .route(
            "/ui",
            get(|| async { asset(INDEX_HTML, "text/html; charset=utf-8") }),
        )
        .route(
            "/ui/",
            get(|| async { asset(INDEX_HTML, "text/html; charset=utf-8") }),
        )
        .route(
            "/ui/app.js",
            get(|| async { asset(APP_JS, "text/javascript; charset=utf-8") }),
        )
        .route(
            "/ui/app.css",
            get(|| async { asset(APP_CSS, "text/css; charset=utf-8") }),
        )
}

/// One file with the dashboard's security headers.
fn asset(body: &'static str, content_type: &'static str) -> Response {
    let mut r = body.into_response();
    let h = r.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CONTENT_SECURITY_POLICY),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    // For browsers that predate `frame-ancestors`.
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    // The files change with the binary; a restart after an upgrade must
    // not leave an old script talking to a new API.
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    r
}
