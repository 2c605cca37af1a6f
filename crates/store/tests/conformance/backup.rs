//! The SQL of `backup` and `restore`: a snapshot that holds its instant
//! while the database moves on, and the path rewrite of a restore.

use clawcut_store::{Backend, MediaKind, Snapshot, SnapshotContents};

use super::*;

async fn version(db: &AppDb, id: &str, status: &str, video: &str, thumb: &str, sha: &str) {
    let _ = db.insert_scene("scene_1", "s").await;
    db.insert_version(id, "scene_1", NOW).await.unwrap();
    db.exec(&format!(
        "UPDATE scene_versions SET status = '{status}', video_path = {video},
                thumbnail_path = {thumb}, video_sha256 = {sha}, video_bytes = 42
          WHERE id = '{id}'"
    ))
    .await
    .unwrap();
}

/// Ready versions in the snapshot, as (version, kind, path, sha256).
fn listed(c: &SnapshotContents) -> Vec<(String, MediaKind, String, Option<String>)> {
    c.media
        .iter()
        .map(|m| {
            (
                m.scene_version_id.clone(),
                m.kind,
                m.path.clone(),
                m.sha256.clone(),
            )
        })
        .collect()
}

pub async fn snapshot_holds_its_instant(url: &str) {
    let ctx = setup(url).await;
    version(
        &ctx.db,
        "v1",
        "ready",
        "'/m/videos/scene_1/v1.mp4'",
        "'/m/thumbnails/scene_1/v1.webp'",
        "'aa'",
    )
    .await;
    version(
        &ctx.db,
        "v2",
        "ready",
        "'/m/videos/scene_1/v2.mp4'",
        "NULL",
        "'bb'",
    )
    .await;
    version(&ctx.db, "v3", "generating", "NULL", "NULL", "NULL").await;
    version(&ctx.db, "v4", "failed", "NULL", "NULL", "NULL").await;
    let dir = tempfile::tempdir().unwrap();
    let dest = dir.path().join("snap.sqlite");
    let snap = ctx.store.begin_snapshot(&dest).await.unwrap();
    // The database moves on after the snapshot.
    ctx.db
        .exec("UPDATE scene_versions SET status = 'ready', video_path = '/m/videos/scene_1/v3.mp4' WHERE id = 'v3'")
        .await
        .unwrap();
    let expect = vec![
        (
            "v1".to_owned(),
            MediaKind::Video,
            "/m/videos/scene_1/v1.mp4".to_owned(),
            Some("aa".to_owned()),
        ),
        (
            "v1".to_owned(),
            MediaKind::Thumbnail,
            "/m/thumbnails/scene_1/v1.webp".to_owned(),
            None,
        ),
        (
            "v2".to_owned(),
            MediaKind::Video,
            "/m/videos/scene_1/v2.mp4".to_owned(),
            Some("bb".to_owned()),
        ),
    ];
    match snap {
        Snapshot::Written(c) => {
            assert_eq!(ctx.backend(), Backend::Sqlite);
            assert_eq!(c.schema_version, 3);
            assert_eq!(listed(&c), expect);
            // The file holds the same instant, read again without the live database.
            let again = clawcut_store::read_sqlite_snapshot(&dest).await.unwrap();
            assert_eq!(listed(&again), expect);
        }
        Snapshot::Exported(s) => {
            assert_eq!(ctx.backend(), Backend::Postgres);
            assert_eq!(s.contents().schema_version, 3);
            assert_eq!(listed(s.contents()), expect);
            // Another session on the exported snapshot (as pg_dump does)
            // sees the instant, not the later commit.
            let pool = sqlx::PgPool::connect(url).await.unwrap();
            let mut tx = pool
                .begin_with("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
                .await
                .unwrap();
            sqlx::query(sqlx::AssertSqlSafe(format!(
                "SET TRANSACTION SNAPSHOT '{}'",
                s.id()
            )))
            .execute(&mut *tx)
            .await
            .unwrap();
            let ready: i64 =
                sqlx::query_scalar("SELECT COUNT(*) FROM scene_versions WHERE status = 'ready'")
                    .fetch_one(&mut *tx)
                    .await
                    .unwrap();
            assert_eq!(ready, 2);
            tx.rollback().await.unwrap();
            s.release().await.unwrap();
        }
    }
}

pub async fn rewrite_media_paths_only_under_the_prefix(url: &str) {
    let ctx = setup(url).await;
    version(
        &ctx.db,
        "v1",
        "ready",
        "'/m/videos/scene_1/v1.mp4'",
        "'/m/thumbnails/scene_1/v1.webp'",
        "'aa'",
    )
    .await;
    version(
        &ctx.db,
        "v2",
        "ready",
        "'/m2/videos/scene_1/v2.mp4'",
        "'videos/scene_1/v2.webp'",
        "'bb'",
    )
    .await;
    version(&ctx.db, "v3", "generating", "NULL", "NULL", "NULL").await;
    ctx.db
        .exec("UPDATE scene_versions SET video_path = '/m' WHERE id = 'v3'")
        .await
        .unwrap();
    let n = ctx
        .store
        .rewrite_media_paths("/m/", "/restored/media/")
        .await
        .unwrap();
    assert_eq!(n, 2);
    let v1 = ctx.db.version("v1").await.unwrap().unwrap();
    assert_eq!(
        v1.video_path.as_deref(),
        Some("/restored/media/videos/scene_1/v1.mp4")
    );
    assert_eq!(
        v1.thumbnail_path.as_deref(),
        Some("/restored/media/thumbnails/scene_1/v1.webp")
    );
    // Another dir sharing the prefix's letters, a relative path, the dir itself: untouched.
    let v2 = ctx.db.version("v2").await.unwrap().unwrap();
    assert_eq!(v2.video_path.as_deref(), Some("/m2/videos/scene_1/v2.mp4"));
    assert_eq!(v2.thumbnail_path.as_deref(), Some("videos/scene_1/v2.webp"));
    let v3 = ctx.db.version("v3").await.unwrap().unwrap();
    assert_eq!(v3.video_path.as_deref(), Some("/m"));
}
