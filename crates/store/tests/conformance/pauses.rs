//! Provider pauses: a paused provider's jobs are not claimed, its probe is
//! taken by one claimer per due time, the probe claim takes only its jobs
//! (preferring the kind of call that failed), and resuming lifts it.

use clawcut_core::PauseCause;
use clawcut_store::{PauseProvider, Probe, ProviderCall};

use super::*;

async fn seed_for(
    ctx: &Ctx,
    id: &str,
    provider: &str,
    status: &str,
    pid: Option<&str>,
    at: Millis,
) {
    let mut j = NewJob::video(id, status, pid, at);
    j.provider = provider.to_owned();
    ctx.db.insert_job_with_scene(&j).await.expect("seed job");
}

fn pause<'a>(
    provider: &'a str,
    cause: PauseCause,
    call: ProviderCall,
    now: Millis,
) -> PauseProvider<'a> {
    PauseProvider {
        provider,
        cause,
        reason: "Unauthorized(401): invalid api key",
        call,
        now,
        worker_id: "w1",
        cooldown: Duration::from_secs(30),
    }
}

fn ids(claimed: Vec<Claimed>) -> Vec<String> {
    let mut v: Vec<String> = jobs(claimed).into_iter().map(|j| j.id).collect();
    v.sort();
    v
}

pub async fn pause_excludes_the_provider_from_claims_until_resumed(url: &str) {
    let ctx = setup(url).await;
    seed_for(
        &ctx,
        "o1",
        "openai",
        "processing",
        Some("p-o1"),
        NOW - 10 * MIN,
    )
    .await;
    seed_for(
        &ctx,
        "k1",
        "kling",
        "processing",
        Some("p-k1"),
        NOW - 10 * MIN,
    )
    .await;
    let r = rules(true);

    let first = ctx
        .store
        .pause_provider(&pause(
            "openai",
            PauseCause::Unauthorized,
            ProviderCall::Poll,
            NOW,
        ))
        .await
        .unwrap();
    assert!(first, "a new pause");
    let again = ctx
        .store
        .pause_provider(&PauseProvider {
            reason: "Account(402): no credit",
            ..pause(
                "openai",
                PauseCause::Account,
                ProviderCall::Submit,
                NOW + MIN,
            )
        })
        .await
        .unwrap();
    assert!(!again, "already paused");
    let pauses = ctx.store.provider_pauses().await.unwrap();
    assert_eq!(pauses.len(), 1);
    let p = &pauses[0];
    assert_eq!(p.provider, "openai");
    // The newer cause and reason; the original start and probe schedule.
    assert_eq!(p.cause, PauseCause::Account);
    assert_eq!(p.reason, "Account(402): no credit");
    assert_eq!(p.call, ProviderCall::Submit);
    assert_eq!((p.paused_at, p.paused_by.as_str()), (NOW, "w1"));
    assert_eq!(p.probe_at, NOW + 30_000);
    assert_eq!(p.cooldown, Duration::from_secs(30));
    assert_eq!(p.probes, 0);
    assert_eq!(p.updated_at, NOW + MIN);

    let got = ids(ctx
        .store
        .claim(&claim_req("w1", NOW, 10, &r))
        .await
        .unwrap());
    assert_eq!(
        got,
        vec!["k1".to_owned()],
        "only the provider that is not paused"
    );

    // An operator naming the job still gets it.
    let mut named = claim_req("w1", NOW, 10, &r);
    named.only_job = Some("o1");
    let got = ids(ctx.store.claim(&named).await.unwrap());
    assert_eq!(got, vec!["o1".to_owned()]);
    let o1 = ctx.store.get_job("o1").await.unwrap().unwrap();
    ctx.store.release(&o1.lease().unwrap()).await.unwrap();

    assert!(ctx.store.resume_provider("openai").await.unwrap());
    assert!(
        !ctx.store.resume_provider("openai").await.unwrap(),
        "resumed once"
    );
    assert!(ctx.store.provider_pauses().await.unwrap().is_empty());
    let got = ids(ctx
        .store
        .claim(&claim_req("w2", NOW, 10, &r))
        .await
        .unwrap());
    assert_eq!(got, vec!["o1".to_owned()], "claimable again");
}

pub async fn probe_is_taken_once_per_due_time(url: &str) {
    let ctx = setup(url).await;
    ctx.store
        .pause_provider(&pause(
            "openai",
            PauseCause::Outage,
            ProviderCall::Poll,
            NOW,
        ))
        .await
        .unwrap();
    let cd = Duration::from_secs(60);
    assert!(
        !ctx.store
            .take_probe("openai", NOW + 29_999, cd)
            .await
            .unwrap(),
        "not due yet"
    );
    assert!(
        !ctx.store
            .take_probe("kling", NOW + 30_000, cd)
            .await
            .unwrap(),
        "not paused"
    );
    // Two replicas at once: exactly one wins.
    let (a, b) = tokio::join!(
        ctx.store.take_probe("openai", NOW + 30_000, cd),
        ctx.store.take_probe("openai", NOW + 30_000, cd),
    );
    assert!(a.unwrap() ^ b.unwrap(), "exactly one probe");
    let p = &ctx.store.provider_pauses().await.unwrap()[0];
    assert_eq!(p.probe_at, NOW + 30_000 + 60_000);
    assert_eq!(p.cooldown, cd);
    assert_eq!(p.probes, 1);
    assert_eq!(p.paused_at, NOW, "a probe does not restart the pause");
    assert!(
        !ctx.store
            .take_probe("openai", NOW + 89_999, cd)
            .await
            .unwrap()
    );
    assert!(
        ctx.store
            .take_probe("openai", NOW + 90_000, cd)
            .await
            .unwrap()
    );
}

pub async fn probe_claim_takes_one_job_of_its_provider(url: &str) {
    let ctx = setup(url).await;
    // The oldest is a poll; a newer one waits for submission.
    seed_for(
        &ctx,
        "poll",
        "openai",
        "processing",
        Some("p-1"),
        NOW - 30 * MIN,
    )
    .await;
    seed_for(&ctx, "sub", "openai", "queued", None, NOW - 20 * MIN).await;
    seed_for(
        &ctx,
        "other",
        "kling",
        "processing",
        Some("p-2"),
        NOW - 40 * MIN,
    )
    .await;
    ctx.store
        .pause_provider(&pause(
            "openai",
            PauseCause::Account,
            ProviderCall::Submit,
            NOW,
        ))
        .await
        .unwrap();
    ctx.store
        .pause_provider(&pause("kling", PauseCause::Outage, ProviderCall::Poll, NOW))
        .await
        .unwrap();
    let r = rules(true);
    let probe = |prefer_unsubmitted| {
        let mut req = claim_req("w1", NOW, 1, &r);
        req.probe = Some(Probe {
            provider: "openai",
            prefer_unsubmitted,
        });
        req
    };
    let got = ids(ctx.store.claim(&probe(true)).await.unwrap());
    assert_eq!(
        got,
        vec!["sub".to_owned()],
        "a create failed: probe with a create"
    );
    let sub = ctx.store.get_job("sub").await.unwrap().unwrap();
    ctx.store.release(&sub.lease().unwrap()).await.unwrap();
    let got = ids(ctx.store.claim(&probe(false)).await.unwrap());
    assert_eq!(
        got,
        vec!["poll".to_owned()],
        "a poll failed: the oldest poll"
    );
    // The only job left of the provider, whatever the preference.
    let got = ids(ctx.store.claim(&probe(false)).await.unwrap());
    assert_eq!(got, vec!["sub".to_owned()]);
    assert!(ctx.store.claim(&probe(true)).await.unwrap().is_empty());
    assert!(
        ctx.store
            .claim(&claim_req("w1", NOW, 10, &r))
            .await
            .unwrap()
            .is_empty(),
        "both providers paused"
    );
}
