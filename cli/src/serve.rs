//! `loupe serve`: the app's static files on 127.0.0.1 only, with the right MIME types (.wasm must
//! be application/wasm) and a Content-Security-Policy that forbids every other origin.

use std::path::{Component, Path, PathBuf};

use anyhow::{Context, Result};

const CSP: &str = "default-src 'self'; script-src 'self' 'wasm-unsafe-eval'; worker-src 'self'; connect-src 'self'; \
                   img-src 'self' blob: data:; style-src 'self' 'unsafe-inline'; object-src 'none'; base-uri 'none'; form-action 'none'";

fn mime(path: &Path) -> &'static str {
    match path.extension().and_then(|e| e.to_str()).unwrap_or_default() {
        "html" => "text/html; charset=utf-8",
        "js" | "mjs" => "text/javascript; charset=utf-8",
        "css" => "text/css; charset=utf-8",
        "json" => "application/json",
        "wasm" => "application/wasm",
        "svg" => "image/svg+xml",
        "png" => "image/png",
        "jpg" | "jpeg" => "image/jpeg",
        "webp" => "image/webp",
        "md" | "txt" => "text/plain; charset=utf-8",
        _ => "application/octet-stream",
    }
}

/// A URL path → a file under `root` (never outside it).
fn resolve(root: &Path, url_path: &str) -> Option<PathBuf> {
    let relative = Path::new(url_path.trim_start_matches('/'));
    if relative.components().any(|c| !matches!(c, Component::Normal(_))) {
        return None;
    }
    let path = root.join(relative);
    if path.is_dir() { Some(path.join("index.html")) } else { Some(path) }
}

pub fn serve(app: &Path, weights: &Path, port: u16) -> Result<()> {
    let server = tiny_http::Server::http(("127.0.0.1", port)).map_err(|e| anyhow::anyhow!("cannot listen on 127.0.0.1:{port}: {e}"))?;
    let address = server.server_addr().to_ip().context("no IP address")?;
    println!("Loupe is at http://{address}/  (serving {}; weights from {})", app.display(), weights.display());
    for request in server.incoming_requests() {
        let url_path = request.url().split(['?', '#']).next().unwrap_or("/").to_string();
        let file = match url_path.strip_prefix("/weights/") {
            Some(rest) => resolve(weights, rest),
            None => resolve(app, &url_path),
        };
        let header = |k: &str, v: &str| tiny_http::Header::from_bytes(k.as_bytes(), v.as_bytes()).expect("valid header");
        let response = match file.as_ref().and_then(|p| std::fs::read(p).ok().map(|b| (p, b))) {
            Some((path, bytes)) => tiny_http::Response::from_data(bytes)
                .with_header(header("Content-Type", mime(path)))
                .with_header(header("Content-Security-Policy", CSP))
                .with_header(header("X-Content-Type-Options", "nosniff"))
                .with_header(header("Cache-Control", "no-cache")),
            None => tiny_http::Response::from_data(b"not found".to_vec()).with_status_code(404),
        };
        let _ = request.respond(response);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_stay_inside_the_root() {
        let root = Path::new("/srv/app");
        assert_eq!(resolve(root, "/app.js"), Some(PathBuf::from("/srv/app/app.js")));
        assert_eq!(resolve(root, "/../etc/passwd"), None);
        assert_eq!(resolve(root, "/a/../../x"), None);
        assert_eq!(mime(Path::new("pkg/loupe_bg.wasm")), "application/wasm");
    }
}
