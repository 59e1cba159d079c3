//! The guide (the mdBook in `docs/`, built by `scripts/setup.sh` into `docs/book`) at
//! `/guide/`, so a node's users find the documentation of the version they run, also on an
//! air-gapped network. Public like the other pages: it is the repository's documentation and
//! holds no data. Files are read from `[ui] guide_dir` on each request, paths confined to it.

use std::path::{Path as FsPath, PathBuf};

use axum::extract::{Path, State};
use axum::http::{header, HeaderValue};
use axum::response::{IntoResponse, Redirect, Response};

use super::{files, Ui};

/// mdBook's pages use inline scripts (theme, sidebar) and their own fonts; nothing from
/// elsewhere, no framing.
const CSP: &str = "default-src 'self'; script-src 'self' 'unsafe-inline'; \
                   style-src 'self' 'unsafe-inline'; img-src 'self' data:; \
                   frame-ancestors 'none'";

const NOT_BUILT: &str = r#"<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Guide not built</title>
<link rel="stylesheet" href="/ui/assets/app.css"></head>
<body><main class="page narrow"><h1>The guide is not built on this node</h1>
<p>The node serves the guide from the folder named by <code>[ui] guide_dir</code>
(<code>FOLDER</code>), which holds no <code>index.html</code>.</p>
<p>Build it with <code>scripts/setup.sh</code> (it installs mdBook and runs
<code>mdbook build docs</code>), or read its sources in the repository's <code>docs/src/</code>.
The API reference is at <a href="/docs">/docs</a>.</p></main></body></html>
"#;

/// Where the guide's built files are.
pub struct Guide {
    dir: PathBuf,
}

impl Guide {
    pub fn new(dir: PathBuf) -> Guide {
        Guide { dir }
    }

    /// Whether the built guide is there (the node says so at start).
    pub fn built(dir: &FsPath) -> bool {
        dir.join("index.html").is_file()
    }

    async fn serve(&self, rel: &str) -> Response {
        if !Self::built(&self.dir) {
            return files::folder_missing(NOT_BUILT, &self.dir);
        }
        let rel = if rel.is_empty() || rel.ends_with('/') {
            format!("{rel}index.html")
        } else {
            rel.to_string()
        };
        let Some(path) = files::confined(&self.dir, &rel) else {
            return files::not_found();
        };
        match tokio::fs::read(&path).await {
            Ok(body) => (
                [
                    (
                        header::CONTENT_TYPE,
                        HeaderValue::from_static(files::content_type(&rel)),
                    ),
                    (header::CACHE_CONTROL, HeaderValue::from_static("no-cache")),
                    (
                        header::X_CONTENT_TYPE_OPTIONS,
                        HeaderValue::from_static("nosniff"),
                    ),
                    (
                        header::CONTENT_SECURITY_POLICY,
                        HeaderValue::from_static(CSP),
                    ),
                ],
                body,
            )
                .into_response(),
            Err(_) => files::not_found(),
        }
    }
}

/// `/guide` to `/guide/`.
#[utoipa::path(get, path = "/guide", responses(
    (status = 303, description = "To /guide/", headers(("Location" = String, description = "/guide/"))),
))]
pub async fn to_root() -> Redirect {
    Redirect::to("/guide/")
}

/// The guide's first page. 404 with how to build it when `[ui] guide_dir` holds no book.
#[utoipa::path(get, path = "/guide/", responses(
    (status = 200, description = "The guide's index.html", body = String, content_type = "text/html; charset=utf-8"),
    (status = 404, description = "The guide is not built: how to build it", body = String, content_type = "text/html; charset=utf-8"),
))]
pub async fn root(State(ui): State<Ui>) -> Response {
    ui.guide.serve("").await
}

/// A file of the built guide (pages, style sheets, scripts, search index, fonts).
#[utoipa::path(get, path = "/guide/{path}", responses(
    (status = 200, description = "The file", body = String, content_type = "text/html; charset=utf-8"),
    (status = 404, description = "No such file, or the guide is not built", body = String, content_type = "text/plain; charset=utf-8"),
))]
pub async fn file(State(ui): State<Ui>, Path(rel): Path<String>) -> Response {
    ui.guide.serve(&rel).await
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::StatusCode;

    #[tokio::test]
    async fn an_unbuilt_guide_answers_how_to_build_it() {
        let g = Guide::new(PathBuf::from("/nonexistent/radstream-book"));
        let resp = g.serve("").await;
        assert_eq!(resp.status(), StatusCode::NOT_FOUND);
        let body = axum::body::to_bytes(resp.into_body(), 1 << 20)
            .await
            .unwrap();
        let text = String::from_utf8_lossy(&body);
        assert!(text.contains("scripts/setup.sh"), "{text}");
        assert!(text.contains("/nonexistent/radstream-book"), "{text}");
    }

    #[tokio::test]
    async fn a_built_guide_is_served_with_its_media_types() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("pacs")).unwrap();
        std::fs::write(dir.path().join("index.html"), "<h1>guide</h1>").unwrap();
        std::fs::write(dir.path().join("pacs/receiving.html"), "<h1>r</h1>").unwrap();
        std::fs::write(dir.path().join("book.js"), "1").unwrap();
        let g = Guide::new(dir.path().to_path_buf());
        for (rel, status, kind) in [
            ("", StatusCode::OK, "text/html; charset=utf-8"),
            (
                "pacs/receiving.html",
                StatusCode::OK,
                "text/html; charset=utf-8",
            ),
            ("book.js", StatusCode::OK, "text/javascript; charset=utf-8"),
            (
                "missing.html",
                StatusCode::NOT_FOUND,
                "text/plain; charset=utf-8",
            ),
            (
                "../index.html",
                StatusCode::NOT_FOUND,
                "text/plain; charset=utf-8",
            ),
        ] {
            let resp = g.serve(rel).await;
            assert_eq!(resp.status(), status, "{rel}");
            assert_eq!(resp.headers()[header::CONTENT_TYPE], kind, "{rel}");
        }
    }
}
