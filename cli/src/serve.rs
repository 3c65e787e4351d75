//! `loupe serve`: the app's static files on 127.0.0.1 only, with the right MIME types (.wasm must
//! be application/wasm) and a Content-Security-Policy that forbids every other origin. Requests
//! must name this server in their Host header (a page on another site that rebinds its DNS name
//! to 127.0.0.1 cannot read the folders), dotfiles are never served, and files are streamed,
//! each on a thread of its own.
//! Pages are cross-origin isolated (COOP + COEP, unless `--no-isolation`), which WebAssembly
//! threads need: without WebGPU the app then computes on every core (the threaded build,
//! www/pkg-threads/).

use std::path::{Component, Path, PathBuf};

use anyhow::{Context, Result};

/// The one Content-Security-Policy of Loupe's pages: sent with every file, and repeated verbatim in
/// each page's `<meta>` (for pages served by another server), which a test holds to this text.
/// No inline styles: the widget styles its shadow root with a constructed stylesheet. Workers from
/// `blob:` URLs: the threaded build's pool workers start from a blob of their own (same-origin)
/// script, as wasm-bindgen-rayon starts them without a bundler.
const CSP: &str = "default-src 'self'; script-src 'self' 'wasm-unsafe-eval'; worker-src 'self' blob:; connect-src 'self'; \
                   img-src 'self' blob: data:; style-src 'self'; object-src 'none'; base-uri 'none'; form-action 'none'";

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

/// A URL path → a file under `root` (never outside it, never a hidden file or folder such as
/// `.git/` or `.env`).
fn resolve(root: &Path, url_path: &str) -> Option<PathBuf> {
    let relative = Path::new(url_path.trim_start_matches('/'));
    let visible = |c: Component| matches!(c, Component::Normal(name) if !name.to_string_lossy().starts_with('.'));
    if !relative.components().all(visible) {
        return None;
    }
    let path = root.join(relative);
    if path.is_dir() { Some(path.join("index.html")) } else { Some(path) }
}

/// Whether a Host header names this server: 127.0.0.1 or localhost at our port (no port only on
/// port 80). Anything else is a DNS-rebinding attempt or a misdirected request.
fn host_allowed(host: Option<&str>, port: u16) -> bool {
    let Some(host) = host else { return false };
    let (name, host_port) = match host.rsplit_once(':') {
        Some((name, p)) => (name, p.parse::<u16>().ok()),
        None => (host, Some(80)),
    };
    matches!(name.to_ascii_lowercase().as_str(), "127.0.0.1" | "localhost") && host_port == Some(port)
}

/// Headers sent with every file: cross-origin isolation gives the page SharedArrayBuffer, so the
/// threaded build can run. The app loads nothing from other origins (the CSP), so nothing breaks.
fn isolation_headers(isolated: bool) -> &'static [(&'static str, &'static str)] {
    if isolated { &[("Cross-Origin-Opener-Policy", "same-origin"), ("Cross-Origin-Embedder-Policy", "require-corp")] } else { &[] }
}

pub fn serve(app: &Path, weights: &Path, port: u16, isolated: bool) -> Result<()> {
    let server = tiny_http::Server::http(("127.0.0.1", port)).map_err(|e| anyhow::anyhow!("cannot listen on 127.0.0.1:{port}: {e}"))?;
    let address = server.server_addr().to_ip().context("no IP address")?;
    println!("Loupe is at http://{address}/  (serving {}; weights from {})", app.display(), weights.display());
    // Each request is answered on its own thread: a response is written as fast as its client
    // reads it, and a client that stops reading a 25 MB wasm or a weight file mid-way must not
    // hold up every other request (a page's worker stalled in loading behind one).
    std::thread::scope(|answering| {
        for request in server.incoming_requests() {
            answering.spawn(move || answer(request, app, weights, address.port(), isolated));
        }
    });
    Ok(())
}

/// One request: the file it names (app or weights folder), or 404, or 421 for another host.
fn answer(request: tiny_http::Request, app: &Path, weights: &Path, port: u16, isolated: bool) {
    let url_path = request.url().split(['?', '#']).next().unwrap_or("/").to_string();
    let file = match url_path.strip_prefix("/weights/") {
        Some(rest) => resolve(weights, rest),
        None => resolve(app, &url_path),
    };
    let host = request.headers().iter().find(|h| h.field.equiv("Host")).map(|h| h.value.as_str().to_string());
    if !host_allowed(host.as_deref(), port) {
        let _ =
            request.respond(tiny_http::Response::from_string("this server only answers requests for 127.0.0.1 or localhost").with_status_code(421));
        return;
    }
    // Constant header names and values: always valid.
    let header = |k: &str, v: &str| tiny_http::Header::from_bytes(k.as_bytes(), v.as_bytes()).expect("valid header");
    let opened = file.as_ref().filter(|p| p.is_file()).and_then(|p| std::fs::File::open(p).ok().map(|f| (p, f)));
    // A client that hangs up mid-response is its own business: nothing to report.
    let _ = match opened {
        Some((path, file)) => {
            let mut response = tiny_http::Response::from_file(file)
                .with_header(header("Content-Type", mime(path)))
                .with_header(header("Content-Security-Policy", CSP))
                .with_header(header("X-Content-Type-Options", "nosniff"))
                .with_header(header("Cache-Control", "no-cache"));
            for (name, value) in isolation_headers(isolated) {
                response.add_header(header(name, value));
            }
            request.respond(response)
        }
        None => request.respond(tiny_http::Response::from_string("not found").with_status_code(404)),
    };
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

    #[test]
    fn loupe_serve_refuses_dotfiles() {
        let root = Path::new("/srv/app");
        for hidden in ["/.git/config", "/.env", "/pkg/.cache/x.js", "/weights/.manifest.json.tmp"] {
            assert_eq!(resolve(root, hidden), None, "{hidden}");
        }
        assert_eq!(resolve(root, "/widget/loupe-crop.js"), Some(PathBuf::from("/srv/app/widget/loupe-crop.js")));
    }

    #[test]
    fn every_page_carries_the_servers_csp() {
        let www = Path::new(env!("CARGO_MANIFEST_DIR")).join("../www");
        let pages = ["index.html", "paper.html", "widget/example.html"];
        for page in pages {
            let html = std::fs::read_to_string(www.join(page)).unwrap();
            let meta = html.split("http-equiv=\"Content-Security-Policy\" content=\"").nth(1).and_then(|rest| rest.split('"').next());
            assert_eq!(meta, Some(CSP), "{page}");
        }
        // Every page of the app is in that list.
        let mut found: Vec<String> = walk_html(&www).into_iter().map(|p| p.strip_prefix(&www).unwrap().to_string_lossy().into_owned()).collect();
        found.sort();
        assert_eq!(found, pages.map(String::from).to_vec());
    }

    fn walk_html(dir: &Path) -> Vec<PathBuf> {
        let mut pages = Vec::new();
        for entry in std::fs::read_dir(dir).unwrap().flatten() {
            let path = entry.path();
            if path.is_dir() {
                pages.extend(walk_html(&path));
            } else if path.extension().is_some_and(|e| e == "html") {
                pages.push(path);
            }
        }
        pages
    }

    #[test]
    fn loupe_serve_checks_the_host_header() {
        assert!(host_allowed(Some("127.0.0.1:8080"), 8080));
        assert!(host_allowed(Some("localhost:8080"), 8080));
        assert!(host_allowed(Some("LOCALHOST:8080"), 8080));
        assert!(host_allowed(Some("localhost"), 80));
        for rebound in [Some("evil.example:8080"), Some("127.0.0.1.evil.example:8080"), Some("127.0.0.1:9999"), Some("localhost"), None] {
            assert!(!host_allowed(rebound, 8080), "{rebound:?}");
        }
    }
}
