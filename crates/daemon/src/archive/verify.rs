//! `restore --verify`: every check, reading only. A backup passes when
//!
//! 1. its snapshot file has the size and sha256 the manifest records;
//! 2. every file the manifest lists is in `objects/` with its size and its
//!    sha256 (each object is read in full and hashed);
//! 3. the snapshot and the manifest agree: every file of every ready scene
//!    version *in the snapshot itself* (read from the SQLite file, or from
//!    the dump's COPY data) is listed, with the sha256 the snapshot
//!    records, and the manifest lists nothing the snapshot does not name.
//!
//! A thumbnail the manifest records as missing at backup time (not
//! required) is a warning. Every problem names the file.

use std::collections::HashMap;
use std::path::Path;

use clawcut_store::{MediaKind, SnapshotContents};

use super::manifest::{self, FileEntry, Manifest};
use super::objects::hash_file;
use super::pgtools;
use super::progress::Progress;

#[derive(Debug, Default)]
pub struct Report {
    pub problems: Vec<String>,
    pub warnings: Vec<String>,
    pub files_ok: u64,
    pub bytes_ok: u64,
    /// Ready scene versions the snapshot holds (`None`: it could not be read).
    pub ready_versions: Option<usize>,
    /// A tool the check needs is missing (`pg_restore`): not the backup's
    /// fault, so not a data error.
    pub unavailable: Option<String>,
}

/// The snapshot's contents, read from the backup's own copy.
async fn snapshot_contents(root: &Path, m: &Manifest) -> anyhow::Result<SnapshotContents> {
    let file = manifest::backups_dir(root)
        .join(&m.id)
        .join(&m.snapshot.file);
    match m.snapshot.format.as_str() {
        "sqlite" => Ok(clawcut_store::read_sqlite_snapshot(&file).await?),
        "pg_dump-custom" => pgtools::dump_contents(&file).await,
        other => anyhow::bail!("unknown snapshot format {other:?}"),
    }
}

pub async fn verify(root: &Path, m: &Manifest) -> Report {
    let mut r = Report::default();
    let bdir = manifest::backups_dir(root).join(&m.id);
    let total = m.snapshot.bytes + m.files.iter().map(|f| f.bytes).sum::<u64>();
    let mut progress = Progress::new("verify", m.files.len() as u64 + 1, Some(total));

    // 1. The snapshot.
    let snap_ok = match snapshot_file_name_ok(&m.snapshot.file) {
        false => {
            r.problems.push(format!(
                "snapshot: the manifest names {:?}, not a file of the backup",
                m.snapshot.file
            ));
            false
        }
        true => {
            let path = bdir.join(&m.snapshot.file);
            match check_content(&path, m.snapshot.bytes, &m.snapshot.sha256, &mut progress) {
                Ok(()) => true,
                Err(why) => {
                    r.problems
                        .push(format!("snapshot {}: {why}", path.display()));
                    false
                }
            }
        }
    };
    progress.file_done();

    // 2. Every object.
    let mut by_path: HashMap<&str, &FileEntry> = HashMap::new();
    for f in &m.files {
        if manifest::clean_relative(&f.path).is_none() {
            r.problems.push(format!(
                "{}: not a clean relative path (a restore would write outside its media dir)",
                f.path
            ));
        }
        if by_path.insert(f.path.as_str(), f).is_some() {
            r.problems
                .push(format!("{}: listed twice in the manifest", f.path));
        }
        match manifest::object_path(root, &f.sha256) {
            None => r.problems.push(format!(
                "{}: the manifest's sha256 {:?} is not a sha256",
                f.path, f.sha256
            )),
            Some(obj) => match check_content(&obj, f.bytes, &f.sha256, &mut progress) {
                Ok(()) => {
                    r.files_ok += 1;
                    r.bytes_ok += f.bytes;
                }
                Err(why) => {
                    r.problems
                        .push(format!("{} (object {}): {why}", f.path, obj.display()))
                }
            },
        }
        progress.file_done();
    }
    progress.finish();
    for miss in &m.missing {
        let line = format!(
            "{} ({} of scene version {}) was not backed up: {}",
            miss.path,
            miss.kind.as_str(),
            miss.scene_version_id,
            miss.reason
        );
        if miss.required {
            r.problems.push(line);
        } else {
            r.warnings.push(line);
        }
    }

    // 3. Snapshot against manifest. A damaged snapshot is not read: what
    // it would say is not what was backed up.
    if !snap_ok {
        return r;
    }
    if m.snapshot.format == "pg_dump-custom"
        && let Err(e) = pgtools::find("pg_restore")
    {
        r.unavailable = Some(format!("cannot read the snapshot's scene versions: {e:#}"));
        return r;
    }
    let contents = match snapshot_contents(root, m).await {
        Ok(c) => c,
        Err(e) => {
            r.problems.push(format!(
                "snapshot {}: cannot be read: {e:#}",
                bdir.join(&m.snapshot.file).display()
            ));
            return r;
        }
    };
    if contents.schema_version != m.schema_version {
        r.problems.push(format!(
            "snapshot: schema version {} but the manifest says {}",
            contents.schema_version, m.schema_version
        ));
    }
    let media_dir = Path::new(&m.source.media_dir);
    let mut named: HashMap<String, ()> = HashMap::new();
    let mut versions = std::collections::BTreeSet::new();
    for media in &contents.media {
        versions.insert(media.scene_version_id.as_str());
        let what = format!(
            "{} of ready scene version {}",
            media.kind.as_str(),
            media.scene_version_id
        );
        let rel = match manifest::relative_media_path(&media.path, media_dir) {
            Ok(rel) => rel.to_string_lossy().into_owned(),
            Err(_) => media.path.clone(),
        };
        named.insert(rel.clone(), ());
        match by_path.get(rel.as_str()) {
            Some(f) => {
                if let Some(sha) = &media.sha256
                    && *sha != f.sha256
                {
                    r.problems.push(format!(
                        "{rel}: the snapshot records sha256 {sha} for the {what}, the manifest {}",
                        f.sha256
                    ));
                }
            }
            None => {
                let recorded = m
                    .missing
                    .iter()
                    .any(|x| x.path == media.path && x.scene_version_id == media.scene_version_id);
                if !recorded {
                    // A thumbnail is never required; a video is.
                    let line = format!("{rel}: the {what} is not in the backup");
                    match media.kind {
                        MediaKind::Video => r.problems.push(line),
                        MediaKind::Thumbnail => r.warnings.push(line),
                    }
                }
            }
        }
    }
    for f in &m.files {
        if !named.contains_key(&f.path) {
            r.problems.push(format!(
                "{}: in the manifest, but no ready scene version in the snapshot points at it",
                f.path
            ));
        }
    }
    r.ready_versions = Some(versions.len());
    r
}

/// The snapshot is a plain file name inside the backup's directory.
fn snapshot_file_name_ok(name: &str) -> bool {
    manifest::clean_relative(name).is_some_and(|p| p.components().count() == 1)
}

/// `path` exists with `bytes` bytes and sha256 `sha256`; else why not.
pub fn check_content(
    path: &Path,
    bytes: u64,
    sha256: &str,
    progress: &mut Progress,
) -> Result<(), String> {
    let meta = match std::fs::metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Err("missing".into()),
        Err(e) => return Err(format!("cannot be read: {e}")),
    };
    if meta.len() < bytes {
        return Err(format!(
            "truncated: {} bytes, the manifest records {bytes}",
            meta.len()
        ));
    }
    if meta.len() > bytes {
        return Err(format!(
            "{} bytes, the manifest records {bytes}",
            meta.len()
        ));
    }
    match hash_file(path, progress) {
        Ok((_, sha)) if sha == sha256 => Ok(()),
        Ok((_, sha)) => Err(format!(
            "corrupted: sha256 {sha}, the manifest records {sha256}"
        )),
        Err(e) => Err(format!("cannot be read: {e}")),
    }
}
