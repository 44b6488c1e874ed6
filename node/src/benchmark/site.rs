//! `benchmark export --site DIR`: every release this node keeps as a static site a coordinator
//! can put on any web server: `index.html` (newest first, with the coordinator's key and how to
//! check a release), and per release `releases/ID.html` (its report) and `releases/ID.json` (the
//! document with its signature and signed bytes, which `benchmark verify` checks offline).
//! Nothing is loaded from elsewhere; every page is self-contained.

use std::fmt::Write;
use std::path::Path;

use anyhow::{Context, Result};
use rusqlite::Connection;

use super::html::esc;
use super::{export_json, get_any, list, rho_text};

const STYLE: &str = "body{font-family:system-ui,sans-serif;max-width:60rem;margin:2rem auto;\
padding:0 1rem;color:#222}table{border-collapse:collapse}td,th{padding:.3rem .6rem;\
border-bottom:1px solid #e5e5e5;text-align:left}.num{text-align:right}.note{color:#555;\
font-size:.9rem}code{word-break:break-all}";

/// Writes the site of every release in `conn` to `dir` (created if need be); the releases.
pub fn export_site(
    conn: &Connection,
    dir: &Path,
    network: &str,
    coordinator: &str,
) -> Result<usize> {
    let releases = list(conn)?;
    let out = dir.join("releases");
    std::fs::create_dir_all(&out).with_context(|| format!("couldn't create {}", out.display()))?;
    let write = |path: &Path, bytes: &[u8]| {
        std::fs::write(path, bytes).with_context(|| format!("couldn't write {}", path.display()))
    };
    for l in &releases {
        let s = get_any(conn, Some(&l.release_id))?
            .with_context(|| format!("release {} vanished while exporting", l.release_id))?;
        let json = serde_json::to_vec_pretty(&export_json(s.release())?)?;
        write(&out.join(format!("{}.json", l.release_id)), &json)?;
        write(
            &out.join(format!("{}.html", l.release_id)),
            s.html().as_bytes(),
        )?;
    }
    let mut h = String::new();
    let _ = write!(
        h,
        "<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\"><meta name=\"viewport\" \
         content=\"width=device-width, initial-scale=1\"><title>Network {net}: releases</title>\
         <style>{STYLE}</style></head><body><h1>Network {net}: signed releases</h1><p>Cross-site \
         outcome benchmarks, expected recovery curves and dropout models of the clinics of network \
         <b>{net}</b>. Each is a differentially private sum computed with secure aggregation: no \
         patient's record left any clinic. Each is signed by the network's coordinator, key \
         <code>{coordinator}</code>.</p><p class=\"note\">To check a release: download its JSON and \
         run <code>mbc-node benchmark verify RELEASE.json --coordinator {coordinator}</code> (no \
         network needed).</p>",
        net = esc(network),
        coordinator = esc(coordinator),
    );
    if releases.is_empty() {
        h.push_str("<p>No release yet.</p>");
    } else {
        h.push_str(
            "<table><tr><th>issued</th><th>kind</th><th>domains</th><th class=\"num\">clinics</th>\
             <th class=\"num\">ρ</th><th>release</th><th>files</th></tr>",
        );
        for l in &releases {
            let id = esc(&l.release_id);
            let _ = write!(
                h,
                "<tr><td>{}</td><td>{}</td><td>{}</td><td class=\"num\">{}</td><td class=\"num\">{}\
                 </td><td><code>{}</code></td><td><a href=\"releases/{id}.html\">report</a> · \
                 <a href=\"releases/{id}.json\">signed JSON</a></td></tr>",
                esc(&l.issued_at),
                esc(&l.kind),
                esc(&l.domains.join(", ")),
                l.clinics,
                rho_text(l.rho),
                esc(l.release_id.get(..12).unwrap_or(&l.release_id)),
            );
        }
        h.push_str("</table>");
    }
    let _ = writeln!(
        h,
        "<p class=\"note\">Written by mbc-node {}.</p></body></html>",
        env!("CARGO_PKG_VERSION")
    );
    write(&dir.join("index.html"), h.as_bytes())?;
    Ok(releases.len())
}
