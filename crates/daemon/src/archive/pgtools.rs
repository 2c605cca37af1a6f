//! PostgreSQL's own tools, run as subprocesses: `pg_dump` (the backup's
//! snapshot, in the custom format, from the snapshot the store exported)
//! and `pg_restore` (loading it; and reading its `scene_versions` rows
//! without any server, for `restore --verify`).
//!
//! They are found, in order: `$CLAWCUT_WORKER_PG_BINDIR`, `pg_config
//! --bindir`, the newest `/usr/lib/postgresql/<major>/bin` (Debian's
//! layout; a newer `pg_dump` can dump an older server, not the reverse),
//! then `$PATH`. The password of a URL is handed over in `PGPASSWORD`,
//! never on the command line (where `ps` would show it).

use std::path::{Path, PathBuf};
use std::process::Stdio;

use anyhow::{Context, bail};
use clawcut_store::{MediaKind, MediaRef, SnapshotContents};

/// The tool `name` (`pg_dump`, `pg_restore`), or why it was not found.
pub fn find(name: &str) -> anyhow::Result<PathBuf> {
    let mut dirs: Vec<PathBuf> = Vec::new();
    if let Some(d) = std::env::var_os("CLAWCUT_WORKER_PG_BINDIR") {
        dirs.push(d.into());
    }
    if let Ok(out) = std::process::Command::new("pg_config")
        .arg("--bindir")
        .stderr(Stdio::null())
        .output()
        && out.status.success()
    {
        dirs.push(PathBuf::from(String::from_utf8_lossy(&out.stdout).trim()));
    }
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .map(|rd| {
            rd.filter_map(Result::ok)
                .filter_map(|e| {
                    let major = e.file_name().to_str()?.parse::<u32>().ok()?;
                    Some((major, e.path().join("bin")))
                })
                .collect()
        })
        .unwrap_or_default();
    versions.sort();
    dirs.extend(versions.into_iter().rev().map(|(_, d)| d));
    if let Some(path) = std::env::var_os("PATH") {
        dirs.extend(std::env::split_paths(&path));
    }
    dirs.iter()
        .map(|d| d.join(name))
        .find(|p| p.is_file())
        .with_context(|| {
            format!(
                "{name} not found (looked in $CLAWCUT_WORKER_PG_BINDIR, pg_config --bindir, \
                 /usr/lib/postgresql/*/bin and $PATH): install the PostgreSQL client tools"
            )
        })
}

/// `url` without its password, and the password.
fn split_password(url: &str) -> (String, Option<String>) {
    match url::Url::parse(url) {
        Ok(mut u) if u.password().is_some() => {
            // The URL form percent-encodes it; libpq wants it as it is.
            let pw = u.password().map(percent_decode);
            let _ = u.set_password(None);
            (u.to_string(), pw)
        }
        _ => (url.to_owned(), None),
    }
}

fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%'
            && i + 2 < b.len()
            && let Some(v) = std::str::from_utf8(&b[i + 1..i + 3])
                .ok()
                .and_then(|h| u8::from_str_radix(h, 16).ok())
        {
            out.push(v);
            i += 3;
            continue;
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn command(tool: &Path, url: &str) -> (tokio::process::Command, String) {
    let (url, password) = split_password(url);
    let mut c = tokio::process::Command::new(tool);
    c.stdin(Stdio::null()).kill_on_drop(true);
    if let Some(pw) = password {
        c.env("PGPASSWORD", pw);
    }
    (c, url)
}

async fn run(mut c: tokio::process::Command, what: &str) -> anyhow::Result<Vec<u8>> {
    let out = c
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .output()
        .await
        .with_context(|| format!("run {what}"))?;
    if !out.status.success() {
        bail!(
            "{what} failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(out.stdout)
}

/// `pg_dump` of the snapshot `snapshot_id` (exported by a transaction that
/// is still open) into `dest`, in the custom format (compressed; read by
/// `pg_restore`). pg_dump fsyncs its output before it exits.
pub async fn dump(url: &str, snapshot_id: &str, dest: &Path) -> anyhow::Result<()> {
    let tool = find("pg_dump")?;
    let (mut c, url) = command(&tool, url);
    c.arg("--format=custom")
        .arg(format!("--snapshot={snapshot_id}"))
        .arg("--no-password")
        .arg("--file")
        .arg(dest)
        .arg("--dbname")
        .arg(url);
    run(c, "pg_dump").await.map(drop)
}

/// Load the dump `file` into the (new, empty) database `url`, in one
/// transaction: a failure leaves it empty. Ownership and grants are not
/// restored: the objects belong to the URL's user.
pub async fn restore(url: &str, file: &Path) -> anyhow::Result<()> {
    let tool = find("pg_restore")?;
    let (mut c, url) = command(&tool, url);
    c.args([
        "--exit-on-error",
        "--single-transaction",
        "--no-owner",
        "--no-privileges",
        "--no-password",
    ])
    .arg("--dbname")
    .arg(url)
    .arg(file);
    run(c, "pg_restore").await.map(drop)
}

/// What a dump holds that `verify` checks: its schema version and every
/// ready scene version's files, read from the dump's own COPY data
/// (`pg_restore --data-only` to stdout, no server involved).
pub async fn dump_contents(file: &Path) -> anyhow::Result<SnapshotContents> {
    let tool = find("pg_restore")?;
    let mut c = tokio::process::Command::new(&tool);
    c.stdin(Stdio::null())
        .kill_on_drop(true)
        .args([
            "--data-only",
            "--table=scene_versions",
            "--table=clawcut_worker_schema",
            "--file=-",
        ])
        .arg(file);
    let sql = run(c, "pg_restore (read the dump)").await?;
    parse_copy_data(&String::from_utf8_lossy(&sql))
}

/// One COPY block's rows, by column name.
struct CopyBlock<'a> {
    table: &'a str,
    columns: Vec<&'a str>,
    rows: Vec<Vec<Option<String>>>,
}

fn copy_blocks(sql: &str) -> anyhow::Result<Vec<CopyBlock<'_>>> {
    let mut blocks = Vec::new();
    let mut lines = sql.lines();
    while let Some(line) = lines.next() {
        let Some(rest) = line.strip_prefix("COPY ") else {
            continue;
        };
        let (table, rest) = rest
            .split_once(" (")
            .with_context(|| format!("unexpected COPY line {line:?}"))?;
        let (cols, _) = rest
            .split_once(") FROM stdin;")
            .with_context(|| format!("unexpected COPY line {line:?}"))?;
        let table = table.rsplit('.').next().unwrap_or(table).trim_matches('"');
        let columns: Vec<&str> = cols.split(", ").map(|c| c.trim_matches('"')).collect();
        let mut rows = Vec::new();
        loop {
            let Some(row) = lines.next() else {
                bail!("COPY data of {table} ends without its terminator");
            };
            if row == "\\." {
                break;
            }
            rows.push(row.split('\t').map(unescape_copy).collect());
        }
        blocks.push(CopyBlock {
            table,
            columns,
            rows,
        });
    }
    Ok(blocks)
}

/// A field of COPY's text format: `\N` is NULL; backslash escapes.
fn unescape_copy(field: &str) -> Option<String> {
    if field == "\\N" {
        return None;
    }
    let mut out = Vec::with_capacity(field.len());
    let b = field.as_bytes();
    let mut i = 0;
    while i < b.len() {
        if b[i] != b'\\' || i + 1 == b.len() {
            out.push(b[i]);
            i += 1;
            continue;
        }
        let c = b[i + 1];
        i += 2;
        match c {
            b'b' => out.push(8),
            b'f' => out.push(12),
            b'n' => out.push(b'\n'),
            b'r' => out.push(b'\r'),
            b't' => out.push(b'\t'),
            b'v' => out.push(11),
            b'0'..=b'7' => {
                let mut v = u32::from(c - b'0');
                let mut k = 0;
                while k < 2 && i < b.len() && (b'0'..=b'7').contains(&b[i]) {
                    v = v * 8 + u32::from(b[i] - b'0');
                    i += 1;
                    k += 1;
                }
                out.push(v as u8);
            }
            b'x' => {
                let mut v = 0u32;
                let mut k = 0;
                while k < 2 && i < b.len() && b[i].is_ascii_hexdigit() {
                    v = v * 16 + (b[i] as char).to_digit(16).unwrap_or(0);
                    i += 1;
                    k += 1;
                }
                out.push(v as u8);
            }
            other => out.push(other),
        }
    }
    Some(String::from_utf8_lossy(&out).into_owned())
}

fn parse_copy_data(sql: &str) -> anyhow::Result<SnapshotContents> {
    let mut contents = SnapshotContents::default();
    let mut saw_versions = false;
    for block in copy_blocks(sql)? {
        let col = |name: &str| block.columns.iter().position(|c| *c == name);
        match block.table {
            "clawcut_worker_schema" => {
                let v = col("version").context("clawcut_worker_schema has no version")?;
                for row in &block.rows {
                    if let Some(n) = row.get(v).cloned().flatten().and_then(|s| s.parse().ok()) {
                        contents.schema_version = contents.schema_version.max(n);
                    }
                }
            }
            "scene_versions" => {
                saw_versions = true;
                let need = |n: &str| col(n).with_context(|| format!("scene_versions has no {n}"));
                let (id, scene, status) = (need("id")?, need("scene_id")?, need("status")?);
                let (video, thumb) = (need("video_path")?, need("thumbnail_path")?);
                let (sha, bytes) = (need("video_sha256")?, need("video_bytes")?);
                let get = |row: &Vec<Option<String>>, i: usize| row.get(i).cloned().flatten();
                let mut ready: Vec<&Vec<Option<String>>> = block
                    .rows
                    .iter()
                    .filter(|r| get(r, status).as_deref() == Some("ready"))
                    .collect();
                ready.sort_by_key(|r| get(r, id));
                for r in ready {
                    let (scene_id, vid) = (
                        get(r, scene).unwrap_or_default(),
                        get(r, id).unwrap_or_default(),
                    );
                    if let Some(path) = get(r, video) {
                        contents.media.push(MediaRef {
                            scene_id: scene_id.clone(),
                            scene_version_id: vid.clone(),
                            kind: MediaKind::Video,
                            path,
                            sha256: get(r, sha),
                            bytes: get(r, bytes).and_then(|b| b.parse().ok()),
                        });
                    }
                    if let Some(path) = get(r, thumb) {
                        contents.media.push(MediaRef {
                            scene_id,
                            scene_version_id: vid,
                            kind: MediaKind::Thumbnail,
                            path,
                            sha256: None,
                            bytes: None,
                        });
                    }
                }
            }
            _ => {}
        }
    }
    if !saw_versions {
        bail!("the dump holds no scene_versions data");
    }
    Ok(contents)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn copy_data_of_a_dump() {
        let sql = "--\n-- Data for Name: scene_versions\nCOPY public.scene_versions (id, scene_id, status, video_path, thumbnail_path, video_sha256, video_bytes, error, created_at, updated_at) FROM stdin;\n\
                   v2\ts\tready\t/m/videos/s/v2.mp4\t\\N\tabc\t12\t\\N\t2026-01-01\t2026-01-01\n\
                   v1\ts\tready\t/m/videos/s/v1\\tx.mp4\t/m/thumbnails/s/v1.webp\tdef\t7\t\\N\t2026-01-01\t2026-01-01\n\
                   v3\ts\tfailed\t\\N\t\\N\t\\N\t\\N\tboom\t2026-01-01\t2026-01-01\n\
                   \\.\n\nCOPY public.clawcut_worker_schema (version, description, applied_at) FROM stdin;\n1\tinit\t2026\n\\.\n";
        let c = parse_copy_data(sql).unwrap();
        assert_eq!(c.schema_version, 1);
        type Seen<'a> = (&'a str, MediaKind, &'a str, Option<&'a str>, Option<i64>);
        let got: Vec<Seen> = c
            .media
            .iter()
            .map(|m| {
                (
                    m.scene_version_id.as_str(),
                    m.kind,
                    m.path.as_str(),
                    m.sha256.as_deref(),
                    m.bytes,
                )
            })
            .collect();
        assert_eq!(
            got,
            vec![
                (
                    "v1",
                    MediaKind::Video,
                    "/m/videos/s/v1\tx.mp4",
                    Some("def"),
                    Some(7)
                ),
                (
                    "v1",
                    MediaKind::Thumbnail,
                    "/m/thumbnails/s/v1.webp",
                    None,
                    None
                ),
                (
                    "v2",
                    MediaKind::Video,
                    "/m/videos/s/v2.mp4",
                    Some("abc"),
                    Some(12)
                ),
            ]
        );
    }

    #[test]
    fn copy_escapes() {
        assert_eq!(unescape_copy("\\N"), None);
        assert_eq!(
            unescape_copy("a\\\\b\\nc\\101\\x42").as_deref(),
            Some("a\\b\ncAB")
        );
    }

    #[test]
    fn passwords_leave_the_command_line() {
        let (url, pw) = split_password("postgres://u:s%40cret@h:5/db");
        assert_eq!(url, "postgres://u@h:5/db");
        assert_eq!(pw.as_deref(), Some("s@cret"));
        assert_eq!(split_password("postgres://u@h/db").1, None);
    }
}
