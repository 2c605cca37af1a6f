//! `backups/<ID>/manifest.json`: what one backup holds. Written once, last,
//! atomically (temp file, fsync, rename, fsync of the directory): a backup
//! directory without it is incomplete and never restored from.

use std::io::Write;
use std::path::{Component, Path, PathBuf};

use anyhow::{Context, bail};
use serde::{Deserialize, Serialize};

use super::sync_dir;

/// `format` of every manifest.
pub const FORMAT: &str = "clawcut-worker-backup";
/// `version` of the format this binary writes and reads.
pub const VERSION: u32 = 1;
pub const FILE_NAME: &str = "manifest.json";

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Manifest {
    pub format: String,
    pub version: u32,
    /// `YYYYMMDDTHHMMSS.mmmZ-xxxx`: sorts by time.
    pub id: String,
    /// RFC 3339, UTC: when the snapshot was taken.
    pub created_at: String,
    pub created_at_ms: i64,
    /// `clawcut-worker <version>`.
    pub tool: String,
    pub source: Source,
    /// Highest migration applied in the snapshot.
    pub schema_version: i64,
    pub snapshot: SnapshotEntry,
    /// Every media file of every ready scene version in the snapshot, each
    /// stored at `objects/<sha256[..2]>/<sha256>`.
    pub files: Vec<FileEntry>,
    /// Files the snapshot names that this backup could not hold, and why.
    pub missing: Vec<MissingEntry>,
    pub stats: Stats,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Source {
    /// `sqlite` or `postgres`.
    pub backend: String,
    /// `database.url` for reading only: no userinfo, no query (the redaction rule).
    pub database_url: String,
    /// `media.dir` as configured: paths under it are stored relative to it.
    pub media_dir: String,
    pub host: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SnapshotEntry {
    /// File name inside `backups/<ID>/`.
    pub file: String,
    /// `sqlite` (a database file) or `pg_dump-custom` (`pg_dump -Fc`).
    pub format: String,
    pub bytes: u64,
    pub sha256: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    Video,
    Thumbnail,
}

impl From<clawcut_store::MediaKind> for Kind {
    fn from(k: clawcut_store::MediaKind) -> Self {
        match k {
            clawcut_store::MediaKind::Video => Kind::Video,
            clawcut_store::MediaKind::Thumbnail => Kind::Thumbnail,
        }
    }
}

impl Kind {
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Video => "video",
            Kind::Thumbnail => "thumbnail",
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct FileEntry {
    /// Relative to the media dir: `videos/<scene>/<version>.<ext>`.
    pub path: String,
    pub kind: Kind,
    pub scene_id: String,
    pub scene_version_id: String,
    pub bytes: u64,
    pub sha256: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct MissingEntry {
    /// As the snapshot stores it (it may not be relative to the media dir).
    pub path: String,
    pub kind: Kind,
    pub scene_id: String,
    pub scene_version_id: String,
    /// A missing video makes the backup incomplete; a missing thumbnail
    /// does not (the daemon lets no thumbnail fail a video either).
    pub required: bool,
    pub reason: String,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Stats {
    /// Files whose content this backup wrote into `objects/`.
    pub copied: u64,
    pub copied_bytes: u64,
    /// Files whose content `objects/` already held (an earlier backup, or
    /// an identical file earlier in this one).
    pub reused: u64,
    pub reused_bytes: u64,
}

impl Manifest {
    /// Missing files that make this backup incomplete.
    pub fn required_missing(&self) -> impl Iterator<Item = &MissingEntry> {
        self.missing.iter().filter(|m| m.required)
    }
}

/// A backup id for `now`: UTC time to the millisecond, then 4 random hex
/// digits. Ids sort by time: backups of one directory are serialized by its
/// lock, and each takes longer than a millisecond.
pub fn new_id(now: std::time::SystemTime) -> String {
    let t = humantime::format_rfc3339_millis(now).to_string();
    let compact: String = t.chars().filter(|c| *c != '-' && *c != ':').collect();
    format!("{compact}-{:04x}", rand::random::<u16>())
}

/// A string that can be a backup id (and so a directory name).
pub fn is_valid_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 64
        && !id.starts_with('.')
        && id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.')
}

pub fn backups_dir(root: &Path) -> PathBuf {
    root.join("backups")
}

pub fn objects_dir(root: &Path) -> PathBuf {
    root.join("objects")
}

/// A lowercase hex sha256.
pub fn is_sha256(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

/// Where content `sha256` is stored; `None` for a string that is not a
/// sha256 (a damaged manifest must not name a path outside `objects/`).
pub fn object_path(root: &Path, sha256: &str) -> Option<PathBuf> {
    is_sha256(sha256).then(|| objects_dir(root).join(&sha256[..2]).join(sha256))
}

/// `path` if it is relative and only descends (no `..`, no root, no
/// prefix): safe to join to a media dir that a restore writes into.
pub fn clean_relative(path: &str) -> Option<PathBuf> {
    let p = Path::new(path);
    let mut out = PathBuf::new();
    for c in p.components() {
        match c {
            Component::Normal(n) => out.push(n),
            Component::CurDir => {}
            _ => return None,
        }
    }
    (!out.as_os_str().is_empty()).then_some(out)
}

/// A stored media path relative to the media dir: an absolute one must lie
/// under `media_dir`; a relative one is taken as relative to it (after
/// dropping a leading `media_dir` when that is relative too).
pub fn relative_media_path(stored: &str, media_dir: &Path) -> Result<PathBuf, String> {
    // A backup of `media.store`: locations are `s3://bucket/prefix/...`,
    // strings rather than paths (`Path` would fold the `//`).
    if let Some(root) = media_dir.to_str().filter(|d| d.starts_with("s3://")) {
        let root = format!("{}/", root.trim_end_matches('/'));
        return match stored.strip_prefix(&root) {
            Some(rest) => clean_relative(rest)
                .ok_or_else(|| format!("not a clean key below the store: {stored:?}")),
            None => Err(format!("outside the store {root} (not backed up)")),
        };
    }
    let p = Path::new(stored);
    let rest = match p.strip_prefix(media_dir) {
        Ok(rest) => rest,
        Err(_) if p.is_absolute() => {
            return Err(format!(
                "outside the media dir {} (not backed up)",
                media_dir.display()
            ));
        }
        Err(_) => p,
    };
    rest.to_str()
        .and_then(clean_relative)
        .ok_or_else(|| format!("not a clean path below the media dir: {stored:?}"))
}

/// Write `m` as `dir/manifest.json`, atomically and durably.
pub fn write_atomic(dir: &Path, m: &Manifest) -> anyhow::Result<()> {
    let tmp = dir.join(format!("{FILE_NAME}.tmp"));
    let path = dir.join(FILE_NAME);
    let text = serde_json::to_vec_pretty(m).context("encode the manifest")?;
    let mut f = std::fs::File::create(&tmp).with_context(|| format!("create {}", tmp.display()))?;
    f.write_all(&text)
        .and_then(|()| f.write_all(b"\n"))
        .and_then(|()| f.sync_all())
        .with_context(|| format!("write {}", tmp.display()))?;
    drop(f);
    std::fs::rename(&tmp, &path)
        .with_context(|| format!("rename {} to {}", tmp.display(), path.display()))?;
    sync_dir(dir).with_context(|| format!("sync {}", dir.display()))?;
    Ok(())
}

/// Read and check one backup's manifest.
pub fn read(root: &Path, id: &str) -> anyhow::Result<Manifest> {
    let path = backups_dir(root).join(id).join(FILE_NAME);
    let text = std::fs::read(&path).with_context(|| format!("read {}", path.display()))?;
    let m: Manifest = serde_json::from_slice(&text)
        .with_context(|| format!("{} is not a valid manifest", path.display()))?;
    if m.format != FORMAT {
        bail!(
            "{}: format {:?}, expected {FORMAT:?}",
            path.display(),
            m.format
        );
    }
    if m.version != VERSION {
        bail!(
            "{}: format version {} (this binary reads {VERSION}): use the clawcut-worker that wrote it",
            path.display(),
            m.version
        );
    }
    if m.id != id {
        bail!("{}: names backup {:?}, not {id:?}", path.display(), m.id);
    }
    Ok(m)
}

/// Backups with a manifest (complete), oldest first; and directories
/// without one (incomplete: a backup that failed or was killed, or one
/// running now).
pub fn list(root: &Path) -> std::io::Result<(Vec<String>, Vec<String>)> {
    let mut complete = Vec::new();
    let mut incomplete = Vec::new();
    let rd = match std::fs::read_dir(backups_dir(root)) {
        Ok(rd) => rd,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok((complete, incomplete)),
        Err(e) => return Err(e),
    };
    for e in rd {
        let e = e?;
        let Some(name) = e.file_name().to_str().map(str::to_owned) else {
            continue;
        };
        if !e.file_type()?.is_dir() || !is_valid_id(&name) {
            continue;
        }
        if e.path().join(FILE_NAME).is_file() {
            complete.push(name);
        } else {
            incomplete.push(name);
        }
    }
    complete.sort();
    incomplete.sort();
    Ok((complete, incomplete))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn relative_store_keys() {
        let store = Path::new("s3://clips/prod");
        assert_eq!(
            relative_media_path("s3://clips/prod/videos/s/v.mp4", store).unwrap(),
            PathBuf::from("videos/s/v.mp4")
        );
        for outside in [
            "s3://other/prod/videos/s/v.mp4",
            "s3://clips/prodx/videos/s/v.mp4",
            "/var/lib/cw/media/videos/s/v.mp4",
            "s3://clips/prod/../etc/passwd",
        ] {
            assert!(relative_media_path(outside, store).is_err(), "{outside}");
        }
    }

    #[test]
    fn relative_media_paths() {
        let media = Path::new("/var/lib/cw/media");
        assert_eq!(
            relative_media_path("/var/lib/cw/media/videos/s/v.mp4", media).unwrap(),
            PathBuf::from("videos/s/v.mp4")
        );
        assert_eq!(
            relative_media_path("videos/s/v.mp4", media).unwrap(),
            PathBuf::from("videos/s/v.mp4")
        );
        assert!(relative_media_path("/var/lib/cw/media2/videos/s/v.mp4", media).is_err());
        assert!(relative_media_path("/var/lib/cw/media/../etc/passwd", media).is_err());
        assert!(relative_media_path("../x", media).is_err());
        assert!(relative_media_path("/etc/passwd", media).is_err());
        assert!(relative_media_path("/var/lib/cw/media", media).is_err());
    }

    #[test]
    fn object_paths_only_for_sha256() {
        let root = Path::new("/b");
        let sha = "ab".repeat(32);
        assert_eq!(
            object_path(root, &sha).unwrap(),
            PathBuf::from(format!("/b/objects/ab/{sha}"))
        );
        assert!(object_path(root, "../../etc/passwd").is_none());
        assert!(object_path(root, &"AB".repeat(32)).is_none());
    }

    #[test]
    fn ids_sort_by_time_and_are_valid() {
        let t = std::time::UNIX_EPOCH + std::time::Duration::from_secs(1_800_000_000);
        let a = new_id(t);
        let b = new_id(t + std::time::Duration::from_secs(1));
        assert!(a < b, "{a} < {b}");
        assert!(a.starts_with("20270115T080000.000Z-"), "{a}");
        let c = new_id(t + std::time::Duration::from_millis(1));
        assert!(a < c, "{a} < {c}");
        assert!(is_valid_id(&a));
        assert!(!is_valid_id("../x"));
        assert!(!is_valid_id(".tmp"));
    }
}
