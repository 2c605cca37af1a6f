//! `recent_worker_ids`: the worker ids of recent events and of live leases
//! on unfinished jobs, each once; nothing older than `since`, no expired
//! lease. (The daemon warns from them when replicas on other hosts share
//! a local media dir.)

use clawcut_store::SetAside;

use super::*;

pub async fn recent_worker_ids_name_events_and_live_leases(url: &str) {
    let ctx = setup(url).await;
    assert!(
        ctx.store
            .recent_worker_ids(NOW - DAY)
            .await
            .unwrap()
            .is_empty(),
        "a new database has seen no worker"
    );
    for (id, at) in [
        ("j1", NOW - 10 * MIN),
        ("j2", NOW - 10 * MIN),
        ("j3", NOW - 10 * MIN),
    ] {
        ctx.db
            .insert_job_with_scene(&NewJob::video(id, "processing", Some(id), at))
            .await
            .expect("seed job");
    }
    // An event by host-a (set aside: one event), a live lease by host-b.
    let (_, lease_a) = lease_of(&ctx, "j1", "host-a:10:aaaaaa", NOW - 5 * MIN).await;
    let aside = SetAside {
        now: NOW - 5 * MIN,
        column: "request".into(),
        problem: "not JSON".into(),
    };
    ctx.store.set_aside(&lease_a, &aside).await.unwrap();
    let (_, _lease_b) = lease_of(&ctx, "j2", "host-b:20:bbbbbb", NOW).await;
    // A lease that expired long ago names nobody.
    let (_, _lease_c) = lease_of(&ctx, "j3", "host-c:30:cccccc", NOW - 3 * DAY).await;

    let ids = ctx.store.recent_worker_ids(NOW - DAY).await.unwrap();
    assert_eq!(ids, ["host-a:10:aaaaaa", "host-b:20:bbbbbb"]);
    // Events before `since` are not counted; live leases still are.
    let ids = ctx.store.recent_worker_ids(NOW - MIN).await.unwrap();
    assert_eq!(ids, ["host-b:20:bbbbbb"]);
}
