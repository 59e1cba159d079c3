//! The pages' files, embedded at compile time. Every page is the same HTML shell; its module
//! (`app.js`) reads the path and draws the page. Answers carry a strict
//! Content-Security-Policy (scripts and styles from this origin only, no inline script, data
//! calls to this origin only), an ETag, and `no-cache` so a new binary's files are picked up
//! at once while unchanged ones answer 304.

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use sha2::{Digest, Sha256};

use super::Ui;

/// The pages' policy: nothing from elsewhere, no inline script or style, images also from
/// `blob:` (rendered frames fetched with the credential) and `data:`.
pub const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; \
    img-src 'self' blob: data:; connect-src 'self'; font-src 'self'; manifest-src 'self'; \
    base-uri 'none'; form-action 'self'; frame-ancestors 'none'";

/// One embedded file.
struct Asset {
    name: &'static str,
    content_type: &'static str,
    body: &'static [u8],
}

macro_rules! asset {
    ($name:literal, $type:expr) => {
        Asset {
            name: $name,
            content_type: $type,
            body: include_bytes!(concat!("assets/", $name)),
        }
    };
}

const JS: &str = "text/javascript; charset=utf-8";

static ASSETS: &[Asset] = &[
    asset!("app.css", "text/css; charset=utf-8"),
    asset!("app.js", JS),
    asset!("api.js", JS),
    asset!("login.js", JS),
    asset!("worklist.js", JS),
    asset!("study.js", JS),
    asset!("ops.js", JS),
    asset!("charts.js", JS),
    asset!("favicon.svg", "image/svg+xml"),
];

const SHELL: &[u8] = include_bytes!("assets/app.html");
const SHELL_NAME: &str = "app.html";
const HTML: &str = "text/html; charset=utf-8";

/// A file of the pages with its media type: embedded, or from `[ui] assets_dir` when set.
async fn load(ui: &Ui, name: &str) -> Option<(&'static str, Bytes)> {
    let (content_type, embedded) = if name == SHELL_NAME {
        (HTML, SHELL)
    } else {
        let a = ASSETS.iter().find(|a| a.name == name)?;
        (a.content_type, a.body)
    };
    match &ui.assets_dir {
        None => Some((content_type, Bytes::from_static(embedded))),
        Some(dir) => match tokio::fs::read(dir.join(name)).await {
            Ok(b) => Some((content_type, Bytes::from(b))),
            Err(e) => {
                tracing::warn!(error = %e, file = name, "ui.assets_dir: file unreadable");
                None
            }
        },
    }
}

/// A strong ETag: the content's hash (microseconds for these small files).
fn etag(body: &[u8]) -> HeaderValue {
    let digest = Sha256::digest(body);
    HeaderValue::from_str(&format!("\"{}\"", hex::encode(&digest[..12])))
        .expect("hex is a valid header value")
}

/// `body` with the policy headers, or 304 when the client holds this version.
fn serve(headers: &HeaderMap, content_type: &'static str, body: Bytes) -> Response {
    let tag = etag(&body);
    let common = [
        (header::ETAG, tag.clone()),
        (header::CACHE_CONTROL, HeaderValue::from_static("no-cache")),
        (
            header::CONTENT_SECURITY_POLICY,
            HeaderValue::from_static(CSP),
        ),
        (
            header::X_CONTENT_TYPE_OPTIONS,
            HeaderValue::from_static("nosniff"),
        ),
        (
            header::REFERRER_POLICY,
            HeaderValue::from_static("no-referrer"),
        ),
    ];
    if headers
        .get(header::IF_NONE_MATCH)
        .is_some_and(|v| v.as_bytes() == tag.as_bytes())
    {
        return (StatusCode::NOT_MODIFIED, common).into_response();
    }
    (
        common,
        [(header::CONTENT_TYPE, HeaderValue::from_static(content_type))],
        body,
    )
        .into_response()
}

async fn shell(ui: &Ui, headers: &HeaderMap) -> Response {
    match load(ui, SHELL_NAME).await {
        Some((t, body)) => serve(headers, t, body),
        None => StatusCode::INTERNAL_SERVER_ERROR.into_response(),
    }
}

/// `/ui` to `/ui/`, where the pages' relative paths hold.
#[utoipa::path(get, path = "/ui", responses(
    (status = 303, description = "To /ui/", headers(("Location" = String, description = "/ui/"))),
))]
pub async fn to_worklist() -> Redirect {
    Redirect::to("/ui/")
}

/// The worklist: studies as they arrive and get results, live from the event stream.
#[utoipa::path(get, path = "/ui/", responses(
    (status = 200, description = "The page (HTML; its script asks for a credential)", body = String, content_type = "text/html; charset=utf-8"),
))]
pub async fn worklist(State(ui): State<Ui>, headers: HeaderMap) -> Response {
    shell(&ui, &headers).await
}

/// A study: header, rendered images with overlay and contours, findings, versions, timeline.
#[utoipa::path(get, path = "/ui/studies/{study_uid}", responses(
    (status = 200, description = "The page (HTML)", body = String, content_type = "text/html; charset=utf-8"),
))]
pub async fn study(
    State(ui): State<Ui>,
    headers: HeaderMap,
    Path(_study_uid): Path<String>,
) -> Response {
    shell(&ui, &headers).await
}

/// The export outbox: pending, sent, dead; retry and cancel for admins.
#[utoipa::path(get, path = "/ui/exports", responses(
    (status = 200, description = "The page (HTML)", body = String, content_type = "text/html; charset=utf-8"),
))]
pub async fn exports(State(ui): State<Ui>, headers: HeaderMap) -> Response {
    shell(&ui, &headers).await
}

/// The installed models: members, checksums, provider.
#[utoipa::path(get, path = "/ui/models", responses(
    (status = 200, description = "The page (HTML)", body = String, content_type = "text/html; charset=utf-8"),
))]
pub async fn models(State(ui): State<Ui>, headers: HeaderMap) -> Response {
    shell(&ui, &headers).await
}

/// Health and the node's key metrics as small live charts.
#[utoipa::path(get, path = "/ui/health", responses(
    (status = 200, description = "The page (HTML)", body = String, content_type = "text/html; charset=utf-8"),
))]
pub async fn health(State(ui): State<Ui>, headers: HeaderMap) -> Response {
    shell(&ui, &headers).await
}

/// The audit log (admins).
#[utoipa::path(get, path = "/ui/audit", responses(
    (status = 200, description = "The page (HTML)", body = String, content_type = "text/html; charset=utf-8"),
))]
pub async fn audit(State(ui): State<Ui>, headers: HeaderMap) -> Response {
    shell(&ui, &headers).await
}

/// A file of the pages (`app.js`, `app.css`, …), embedded in the binary.
#[utoipa::path(get, path = "/ui/assets/{file}", responses(
    (status = 200, description = "The file", body = String, content_type = "text/javascript"),
    (status = 304, description = "Unchanged (If-None-Match)"),
    (status = 404, description = "No such file", body = String, content_type = "text/plain"),
))]
pub async fn asset(State(ui): State<Ui>, headers: HeaderMap, Path(file): Path<String>) -> Response {
    match load(&ui, &file).await.filter(|_| file != SHELL_NAME) {
        Some((t, body)) => serve(&headers, t, body),
        None => (
            StatusCode::NOT_FOUND,
            [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
            "no such asset",
        )
            .into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_module_the_pages_import_is_embedded() {
        let names: Vec<&str> = ASSETS.iter().map(|a| a.name).collect();
        for a in ASSETS.iter().filter(|a| a.name.ends_with(".js")) {
            let text = std::str::from_utf8(a.body).unwrap();
            for part in text.split(" from '").skip(1) {
                let target = part.split('\'').next().unwrap();
                let target = target
                    .strip_prefix("./")
                    .unwrap_or_else(|| panic!("{}: relative import expected: {target}", a.name));
                assert!(names.contains(&target), "{} imports {target}", a.name);
            }
        }
        let shell = std::str::from_utf8(SHELL).unwrap();
        assert!(shell.contains("/ui/assets/app.js") && shell.contains("/ui/assets/app.css"));
        assert!(
            !shell.contains("<script>"),
            "no inline script under the CSP"
        );
    }

    #[test]
    fn unchanged_files_answer_304() {
        let body = || Bytes::from_static(ASSETS[1].body);
        let first = serve(&HeaderMap::new(), JS, body());
        assert_eq!(first.status(), StatusCode::OK);
        let tag = first.headers()[header::ETAG].clone();
        let mut again = HeaderMap::new();
        again.insert(header::IF_NONE_MATCH, tag);
        assert_eq!(serve(&again, JS, body()).status(), StatusCode::NOT_MODIFIED);
        assert!(first.headers()[header::CONTENT_SECURITY_POLICY]
            .to_str()
            .unwrap()
            .contains("connect-src 'self'"));
    }
}
