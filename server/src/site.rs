//! The built site this binary serves: it must be there, built the way this binary was, and its
//! files go out with the cache rules their names allow.
//!
//! `cargo leptos build --split` and `cargo leptos build --split --release` write the same
//! `target/site`. A
//! release binary serving a debug site (or the other way round) renders pages that never
//! hydrate: they look alive but nothing on them works. The frontend marks its WebAssembly with
//! its build profile (a custom section, `rally_build`); the server compares it with its own at
//! start-up and refuses a mismatch with one line.
//!
//! cargo-leptos fingerprints the frontend's files (`hash-files` in Cargo.toml): their names
//! carry a hash of their content (`pkg/rally.<hash>.wasm`), listed in the site root's
//! `hash.txt`. A file whose content can never change under its name — the stylesheet, the split
//! loader, the split-off WebAssembly files — is kept by browsers for a year without asking again;
//! everything else is revalidated on every use (`304 Not Modified` when unchanged): pages, the
//! favicon, the main WebAssembly file, the split manifest and the JavaScript glue (cargo-leptos
//! names these before writing the split loader's or other files' final names into them, so their
//! content can change while their name stays), files of a site built without fingerprints.
//! `--precompress` (release builds) writes a Brotli and a gzip variant beside every file; they
//! are chosen by `Accept-Encoding`.
//!
//! The landing, invite and ops pages load their code separately (lazy routes), which works only
//! in a site built with `--split`: hash.txt then names the split loader. A fingerprinted site
//! without one is refused, since its pages would never become interactive.

use std::path::{Path, PathBuf};

use axum::http::header::{self, HeaderValue};
use axum::response::Response;

/// The file cargo-leptos writes the fingerprints into (`hash-file-name` in Cargo.toml, relative
/// to the binary's directory there; the site root here).
pub const FINGERPRINT_FILE: &str = "hash.txt";
/// The name cargo-leptos gives the frontend's files (`output_name`).
const OUTPUT_NAME: &str = "rally";
/// The custom section the frontend writes its build profile into.
const SECTION: &str = "rally_build";

/// `Cache-Control` of a file whose name changes with its content.
const IMMUTABLE: &str = "public, max-age=31536000, immutable";
/// `Cache-Control` of everything else the site serves (the favicon, a site built without
/// fingerprints): ask again before each use.
const REVALIDATE: &str = "no-cache";

/// What is wrong with the site.
#[derive(Debug, thiserror::Error)]
pub enum SiteError {
    #[error("site root {0} has no pkg/ directory, or not the files its hash.txt names; build the site first (`cargo leptos build --split`) or set --site-root")]
    Missing(PathBuf),
    #[error("the site in {0} was built without --split: pages whose code loads separately would never become interactive; rebuild it with `cargo leptos build --split`")]
    NotSplit(PathBuf),
    #[error("the site in {root} is a {site} build but this server is a {server} build; rebuild the site alongside the binary (`cargo leptos build --split{flag}`)")]
    Mismatch {
        root: PathBuf,
        site: String,
        server: &'static str,
        flag: &'static str,
    },
}

/// The built site: where it is and what its frontend files are called.
#[derive(Clone, Debug)]
pub struct Site {
    root: PathBuf,
    files: FrontendFiles,
}

/// The frontend's script, WebAssembly and stylesheet, as named in `pkg/`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FrontendFiles {
    pub js: String,
    pub wasm: String,
    pub css: String,
    /// Whether the names carry content hashes.
    pub fingerprinted: bool,
    /// The script that loads split-off WebAssembly (`__wasm_split.<hash>.js`), in a site built
    /// with `--split`.
    pub split_loader: Option<String>,
}

impl FrontendFiles {
    /// The names given the contents of `hash.txt` (`js: <hash>` lines), or the plain names
    /// without it.
    pub fn from_fingerprints(fingerprints: Option<&str>) -> FrontendFiles {
        let hash_of = |kind: &str| {
            fingerprints?.lines().find_map(|line| {
                let (name, hash) = line.split_once(':')?;
                (name.trim() == kind && !hash.trim().is_empty()).then(|| hash.trim().to_owned())
            })
        };
        let name = |kind: &str| match hash_of(kind) {
            Some(hash) => format!("{OUTPUT_NAME}.{hash}.{kind}"),
            None => format!("{OUTPUT_NAME}.{kind}"),
        };
        FrontendFiles {
            fingerprinted: ["js", "wasm", "css"]
                .iter()
                .all(|kind| hash_of(kind).is_some()),
            js: name("js"),
            wasm: name("wasm"),
            css: name("css"),
            split_loader: hash_of("split").map(|hash| format!("__wasm_split.{hash}.js")),
        }
    }
}

impl Site {
    /// Read and check the site root.
    pub fn open(root: &Path) -> Result<Site, SiteError> {
        if !root.join("pkg").is_dir() {
            return Err(SiteError::Missing(root.to_path_buf()));
        }
        let fingerprints = std::fs::read_to_string(root.join(FINGERPRINT_FILE)).ok();
        let site = Site {
            root: root.to_path_buf(),
            files: FrontendFiles::from_fingerprints(fingerprints.as_deref()),
        };
        if site.files.fingerprinted && !site.pkg_path(&site.files.wasm).is_file() {
            return Err(SiteError::Missing(root.to_path_buf()));
        }
        site.check_profile()?;
        match &site.files.split_loader {
            None if site.files.fingerprinted => {
                return Err(SiteError::NotSplit(root.to_path_buf()))
            }
            Some(loader) if !site.pkg_path(loader).is_file() => {
                return Err(SiteError::Missing(root.to_path_buf()))
            }
            _ => {}
        }
        if server_profile() == "release"
            && !site
                .pkg_path(&site.files.wasm)
                .with_extension("wasm.br")
                .is_file()
        {
            tracing::warn!(
                site_root = %root.display(),
                "the site was built without --precompress: its files go out uncompressed"
            );
        }
        Ok(site)
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    pub fn files(&self) -> &FrontendFiles {
        &self.files
    }

    /// The file `hash.txt`, when the site has one; Leptos reads the fingerprinted names from it.
    pub fn fingerprint_file(&self) -> Option<PathBuf> {
        self.files
            .fingerprinted
            .then(|| std::path::absolute(self.root.join(FINGERPRINT_FILE)).ok())
            .flatten()
    }

    /// The stylesheet's address, for pages rendered without Leptos.
    pub fn stylesheet_href(&self) -> String {
        format!("/pkg/{}", self.files.css)
    }

    /// The `Link` header a page goes out with: the frontend's files to fetch at once.
    ///
    /// The page's `<head>` names the same files, but a slow phone finds them there only once it
    /// has parsed that far; Chromium acts on the header when the navigation commits — on the
    /// throttled profile the WebAssembly download, the long pole before the page is
    /// interactive, started up to ~40 ms sooner (BENCHMARKS.md, "Ready within 3 s"). The
    /// attributes match how each file is then fetched, so each is fetched once: the WebAssembly
    /// by wasm-bindgen's `fetch` (CORS mode, same-origin credentials: `crossorigin`), the script
    /// as a module, the stylesheet as a style.
    /// `None` if a file name cannot go into a header (names come from hash.txt).
    pub fn preload_header(&self) -> Option<HeaderValue> {
        let FrontendFiles { js, wasm, css, .. } = &self.files;
        let links = format!(
            "</pkg/{wasm}>; rel=preload; as=fetch; type=\"application/wasm\"; crossorigin, \
             </pkg/{js}>; rel=modulepreload; crossorigin, </pkg/{css}>; rel=preload; as=style"
        );
        HeaderValue::try_from(links).ok()
    }

    /// Set the cache rules of a file the site served at `path`: a year for names that change
    /// with their content (see the module documentation), revalidation for the rest; and
    /// `Vary: Accept-Encoding`, since the same address answers Brotli, gzip or plain bytes.
    pub fn set_cache_headers(&self, path: &str, response: &mut Response) {
        let served = response.status().is_success()
            || response.status() == axum::http::StatusCode::NOT_MODIFIED;
        if !served || response.headers().contains_key(header::CACHE_CONTROL) {
            return;
        }
        let immutable = self.files.fingerprinted
            && path.strip_prefix("/pkg/").is_some_and(|name| {
                name == self.files.css
                    || self.files.split_loader.as_deref() == Some(name)
                    || (name.ends_with(".wasm")
                        && name != self.files.wasm
                        && name.matches('.').count() >= 2)
            });
        let headers = response.headers_mut();
        headers.insert(
            header::CACHE_CONTROL,
            HeaderValue::from_static(if immutable { IMMUTABLE } else { REVALIDATE }),
        );
        headers.insert(header::VARY, HeaderValue::from_static("accept-encoding"));
    }

    fn pkg_path(&self, name: &str) -> PathBuf {
        self.root.join("pkg").join(name)
    }

    /// A site without the WebAssembly file, or one that does not say its profile (a
    /// client-side-only trunk build), passes: nothing is known to be wrong.
    fn check_profile(&self) -> Result<(), SiteError> {
        let Ok(wasm) = std::fs::read(self.pkg_path(&self.files.wasm)) else {
            return Ok(());
        };
        let Some(site) = custom_section(&wasm, SECTION) else {
            return Ok(());
        };
        let site = String::from_utf8_lossy(site).trim().to_owned();
        let server = server_profile();
        if site == server {
            return Ok(());
        }
        Err(SiteError::Mismatch {
            root: self.root.clone(),
            site,
            server,
            flag: if server == "release" {
                " --release"
            } else {
                ""
            },
        })
    }
}

/// This binary's build profile.
pub fn server_profile() -> &'static str {
    if cfg!(debug_assertions) {
        "debug"
    } else {
        "release"
    }
}

/// The contents of the custom section `name` of a WebAssembly module, if it has one.
fn custom_section<'a>(wasm: &'a [u8], name: &str) -> Option<&'a [u8]> {
    let mut rest = wasm.strip_prefix(b"\0asm")?.get(4..)?; // magic, then version
    while !rest.is_empty() {
        let (&id, after_id) = rest.split_first()?;
        let (size, body) = leb128(after_id)?;
        let section = body.get(..size)?;
        rest = &body[size..];
        if id == 0 {
            let (name_len, named) = leb128(section)?;
            if named.get(..name_len)? == name.as_bytes() {
                return Some(&named[name_len..]);
            }
        }
    }
    None
}

/// An unsigned LEB128 number and what follows it.
fn leb128(bytes: &[u8]) -> Option<(usize, &[u8])> {
    let mut value = 0usize;
    for (i, &byte) in bytes.iter().enumerate().take(5) {
        value |= usize::from(byte & 0x7f) << (7 * i);
        if byte & 0x80 == 0 {
            return Some((value, &bytes[i + 1..]));
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A module with one custom section `name` holding `content`, after a type section.
    fn module(name: &str, content: &[u8]) -> Vec<u8> {
        let mut wasm = b"\0asm\x01\0\0\0".to_vec();
        wasm.extend_from_slice(&[1, 1, 0]); // type section: no types
        let mut body = vec![name.len() as u8];
        body.extend_from_slice(name.as_bytes());
        body.extend_from_slice(content);
        wasm.push(0);
        wasm.push(body.len() as u8);
        wasm.extend_from_slice(&body);
        wasm
    }

    #[test]
    fn finds_the_profile_section() {
        let wasm = module("rally_build", b"release");
        assert_eq!(custom_section(&wasm, "rally_build"), Some(&b"release"[..]));
        assert_eq!(custom_section(&wasm, "other"), None);
        assert_eq!(custom_section(b"not wasm", "rally_build"), None);
        assert_eq!(
            custom_section(&wasm[..wasm.len() - 3], "rally_build"),
            None,
            "cut short"
        );
    }

    #[test]
    fn a_site_of_the_other_profile_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let check = |root: &Path| Site::open(root).map(|_| ());
        assert!(matches!(check(dir.path()), Err(SiteError::Missing(_))));
        std::fs::create_dir(dir.path().join("pkg")).unwrap();
        assert!(
            check(dir.path()).is_ok(),
            "no wasm: nothing known to be wrong"
        );
        let other = if server_profile() == "debug" {
            "release"
        } else {
            "debug  "
        };
        std::fs::write(
            dir.path().join("pkg/rally.wasm"),
            module(SECTION, other.as_bytes()),
        )
        .unwrap();
        let error = check(dir.path()).unwrap_err().to_string();
        assert!(error.contains("rebuild the site"), "{error}");
        let same = format!("{:7}", server_profile());
        std::fs::write(
            dir.path().join("pkg/rally.wasm"),
            module(SECTION, same.as_bytes()),
        )
        .unwrap();
        assert!(check(dir.path()).is_ok());

        // Fingerprinted: the profile is read from the file hash.txt names.
        std::fs::write(
            dir.path().join("pkg/rally.wasm"),
            module(SECTION, b"neither"),
        )
        .unwrap();
        std::fs::write(
            dir.path().join("pkg/rally.Xy_1.wasm"),
            module(SECTION, other.as_bytes()),
        )
        .unwrap();
        std::fs::write(
            dir.path().join(FINGERPRINT_FILE),
            "js: Ab\nwasm: Xy_1\ncss: Cd\n",
        )
        .unwrap();
        assert!(
            matches!(check(dir.path()), Err(SiteError::Mismatch { .. })),
            "the fingerprinted file is the one checked"
        );
        std::fs::write(
            dir.path().join("pkg/rally.Xy_1.wasm"),
            module(SECTION, same.as_bytes()),
        )
        .unwrap();
        assert!(
            matches!(check(dir.path()), Err(SiteError::NotSplit(_))),
            "built without --split"
        );
        std::fs::write(
            dir.path().join(FINGERPRINT_FILE),
            "js: Ab\nwasm: Xy_1\ncss: Cd\nmanifest: Ef\nsplit: Gh\n",
        )
        .unwrap();
        assert!(
            matches!(check(dir.path()), Err(SiteError::Missing(_))),
            "hash.txt names a split loader that is not there"
        );
        std::fs::write(dir.path().join("pkg/__wasm_split.Gh.js"), "").unwrap();
        assert!(check(dir.path()).is_ok());
        std::fs::remove_file(dir.path().join("pkg/rally.Xy_1.wasm")).unwrap();
        assert!(
            matches!(check(dir.path()), Err(SiteError::Missing(_))),
            "hash.txt names a file that is not there"
        );
    }

    #[test]
    fn pages_name_the_frontend_files_in_their_headers() {
        let site = Site {
            root: PathBuf::from("site"),
            files: FrontendFiles::from_fingerprints(Some("js: a1\nwasm: b-2\ncss: c_3\n")),
        };
        assert_eq!(
            site.preload_header().unwrap(),
            "</pkg/rally.b-2.wasm>; rel=preload; as=fetch; type=\"application/wasm\"; crossorigin, \
             </pkg/rally.a1.js>; rel=modulepreload; crossorigin, </pkg/rally.c_3.css>; rel=preload; as=style"
        );
        let unusable = Site {
            root: PathBuf::from("site"),
            files: FrontendFiles::from_fingerprints(Some("js: a\u{7f}\nwasm: b\ncss: c\n")),
        };
        assert_eq!(unusable.preload_header(), None);
    }

    #[test]
    fn fingerprints_name_the_frontend_files() {
        let plain = FrontendFiles::from_fingerprints(None);
        assert_eq!(
            (
                plain.js.as_str(),
                plain.wasm.as_str(),
                plain.css.as_str(),
                plain.fingerprinted
            ),
            ("rally.js", "rally.wasm", "rally.css", false)
        );
        let hashed = FrontendFiles::from_fingerprints(Some("js: a1\nwasm: b-2\ncss: c_3\n"));
        assert_eq!(
            (
                hashed.js.as_str(),
                hashed.wasm.as_str(),
                hashed.css.as_str(),
                hashed.fingerprinted
            ),
            ("rally.a1.js", "rally.b-2.wasm", "rally.c_3.css", true)
        );
        // A file missing from the list keeps its plain name, and then nothing is immutable.
        let partial = FrontendFiles::from_fingerprints(Some("js: a1\nwasm:\n"));
        assert_eq!(
            (partial.wasm.as_str(), partial.fingerprinted),
            ("rally.wasm", false)
        );
    }

    #[test]
    fn only_fingerprinted_files_are_kept_for_a_year() {
        let site = Site {
            root: PathBuf::from("site"),
            files: FrontendFiles::from_fingerprints(Some(
                "js: a1\nwasm: b2\ncss: c3\nmanifest: d4\nsplit: e5\n",
            )),
        };
        let cache_of = |path: &str, status: u16| {
            let mut response = Response::new(axum::body::Body::empty());
            *response.status_mut() = axum::http::StatusCode::from_u16(status).unwrap();
            site.set_cache_headers(path, &mut response);
            let header = |name| {
                response
                    .headers()
                    .get(name)
                    .map(|v: &HeaderValue| v.to_str().unwrap().to_owned())
            };
            (header(header::CACHE_CONTROL), header(header::VARY))
        };
        let year = (
            Some(IMMUTABLE.to_owned()),
            Some("accept-encoding".to_owned()),
        );
        let ask = (
            Some(REVALIDATE.to_owned()),
            Some("accept-encoding".to_owned()),
        );
        for (path, status, expected) in [
            ("/pkg/rally.c3.css", 304, year.clone()),
            ("/pkg/__wasm_split.e5.js", 200, year.clone()),
            ("/pkg/split___ops_route_view_23.f6.wasm", 200, year.clone()),
            ("/pkg/chunk_4.g7.wasm", 200, year),
            ("/pkg/rally.a1.js", 200, ask.clone()),
            ("/pkg/rally.b2.wasm", 304, ask.clone()),
            ("/pkg/__wasm_split_manifest.d4.json", 200, ask.clone()),
            ("/pkg/rally.wasm", 200, ask.clone()),
            ("/pkg/snippets/x/inline0.js", 200, ask.clone()),
            ("/favicon.svg", 200, ask),
            ("/pkg/rally.b2.wasm", 404, (None, None)),
        ] {
            assert_eq!(cache_of(path, status), expected, "{path} {status}");
        }
    }
}
