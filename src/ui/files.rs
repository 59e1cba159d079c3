//! Serving a folder of built files (OHIF's `dist/`, the guide's `docs/book`): request paths
//! confined to the folder, media types by extension, and the answers both give when a file or
//! the whole folder is missing.

use std::path::{Component, Path, PathBuf};

use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};

/// `rel` inside `dir`: only plain names, no `..`, no absolute path.
pub fn confined(dir: &Path, rel: &str) -> Option<PathBuf> {
    let rel = Path::new(rel);
    rel.components()
        .all(|c| matches!(c, Component::Normal(_)))
        .then(|| dir.join(rel))
}

/// Media type by extension (what OHIF's `dist/` and an mdBook hold).
pub fn content_type(path: &str) -> &'static str {
    let ext = path.rsplit_once('.').map(|(_, e)| e).unwrap_or("");
    match ext {
        "html" => "text/html; charset=utf-8",
        "js" | "mjs" => "text/javascript; charset=utf-8",
        "css" => "text/css; charset=utf-8",
        "json" | "map" => "application/json",
        "wasm" => "application/wasm",
        "svg" => "image/svg+xml",
        "png" => "image/png",
        "ico" => "image/x-icon",
        "jpg" | "jpeg" => "image/jpeg",
        "gif" => "image/gif",
        "woff2" => "font/woff2",
        "woff" => "font/woff",
        "ttf" => "font/ttf",
        "txt" => "text/plain; charset=utf-8",
        "xml" => "application/xml",
        _ => "application/octet-stream",
    }
}

/// 404 with `page` (an HTML page saying how to install what is missing), its `FOLDER`
/// replaced by `dir`, under the pages' strict policy.
pub fn folder_missing(page: &str, dir: &Path) -> Response {
    let page = page.replace("FOLDER", &escape(&dir.display().to_string()));
    (
        StatusCode::NOT_FOUND,
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (header::CONTENT_SECURITY_POLICY, super::assets::CSP),
        ],
        page,
    )
        .into_response()
}

/// 404 for a file the folder does not have.
pub fn not_found() -> Response {
    (
        StatusCode::NOT_FOUND,
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        "not found",
    )
        .into_response()
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_stay_inside_the_folder() {
        let dir = Path::new("/srv/ohif");
        assert_eq!(
            confined(dir, "assets/x.png"),
            Some(PathBuf::from("/srv/ohif/assets/x.png"))
        );
        assert_eq!(confined(dir, "../etc/passwd"), None);
        assert_eq!(confined(dir, "assets/../../x"), None);
        assert_eq!(confined(dir, "/etc/passwd"), None);
        assert_eq!(confined(dir, "a/../../b"), None);
    }

    #[test]
    fn media_types_by_extension() {
        assert_eq!(content_type("x/y.wasm"), "application/wasm");
        assert_eq!(content_type("book.js"), "text/javascript; charset=utf-8");
        assert_eq!(content_type("noext"), "application/octet-stream");
    }
}
