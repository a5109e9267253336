//! The built site this binary serves: it must be there, and built the way this binary was.
//!
//! `cargo leptos build` and `cargo leptos build --release` write the same `target/site`. A
//! release binary serving a debug site (or the other way round) renders pages that never
//! hydrate: they look alive but nothing on them works. The frontend marks its WebAssembly with
//! its build profile (a custom section, `rally_build`); the server compares it with its own at
//! start-up and refuses a mismatch with one line.

use std::path::{Path, PathBuf};

/// The site's WebAssembly file, as cargo-leptos names it.
const WASM: &str = "pkg/rally.wasm";
/// The custom section the frontend writes its build profile into.
const SECTION: &str = "rally_build";

/// What is wrong with the site.
#[derive(Debug, thiserror::Error)]
pub enum SiteError {
    #[error("site root {0} has no pkg/ directory; build the site first (`cargo leptos build`) or set --site-root")]
    Missing(PathBuf),
    #[error("the site in {root} is a {site} build but this server is a {server} build; rebuild the site alongside the binary (`cargo leptos build{flag}`)")]
    Mismatch {
        root: PathBuf,
        site: String,
        server: &'static str,
        flag: &'static str,
    },
}

/// This binary's build profile.
pub fn server_profile() -> &'static str {
    if cfg!(debug_assertions) {
        "debug"
    } else {
        "release"
    }
}

/// Check the site root. A site without the WebAssembly file, or one that does not say its
/// profile (a client-side-only trunk build), passes: nothing is known to be wrong.
pub fn check(root: &Path) -> Result<(), SiteError> {
    if !root.join("pkg").is_dir() {
        return Err(SiteError::Missing(root.to_path_buf()));
    }
    let Ok(wasm) = std::fs::read(root.join(WASM)) else {
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
        root: root.to_path_buf(),
        site,
        server,
        flag: if server == "release" {
            " --release"
        } else {
            ""
        },
    })
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
        std::fs::write(dir.path().join(WASM), module(SECTION, other.as_bytes())).unwrap();
        let error = check(dir.path()).unwrap_err().to_string();
        assert!(error.contains("rebuild the site"), "{error}");
        let same = format!("{:7}", server_profile());
        std::fs::write(dir.path().join(WASM), module(SECTION, same.as_bytes())).unwrap();
        assert!(check(dir.path()).is_ok());
    }
}
