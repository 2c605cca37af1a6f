//! How both backends' pools hand out connections.

use std::time::Duration;

use sqlx::pool::PoolOptions;
use sqlx::{Connection, Database};

/// How long a pooled connection may sit idle before it is pinged on its
/// way out of the pool.
pub(crate) const PING_IDLE_AFTER: Duration = Duration::from_secs(1);

/// sqlx pings every connection it hands out (`test_before_acquire`): a
/// round trip before every statement and every transaction, which under
/// load costs as much as the statement it precedes (on PostgreSQL, 0.6–0.9
/// ms each in the end-to-end bench, where the batched completion waits for
/// its `BEGIN`). A connection in steady use has just shown it works; one
/// idle for a while (a server restart, a proxy's idle timeout may have cut
/// it) is pinged first and, if the ping fails, replaced by another, as sqlx
/// does for all of them by default.
pub(crate) fn ping_when_idle<DB: Database>(options: PoolOptions<DB>) -> PoolOptions<DB> {
    options
        .test_before_acquire(false)
        .before_acquire(|conn, meta| {
            Box::pin(async move {
                if meta.idle_for >= PING_IDLE_AFTER {
                    conn.ping().await?;
                }
                Ok(true)
            })
        })
}
