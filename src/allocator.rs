//! glibc's allocator, set up for a long-running process with few threads.
//!
//! glibc gives a thread that finds the allocator locked an arena of its own, up to eight per
//! core, and memory freed in one arena serves only that arena. The operator's objects are
//! allocated by whichever tokio worker decodes a watch event or runs a reconcile and are freed
//! by another, so each worker's arena keeps free memory the others cannot use: measured at 10,000
//! objects, the two workers' arenas held 30 MB, 13 MB of it free, beside a main arena with almost
//! none free. One arena for every thread keeps what is freed usable by all; the few threads
//! contend little for it.
//!
//! glibc serves a large block (a page of a listing, a response body) from its own mapping, handed
//! back to the system when freed, but only until the first such block is freed: from then on it
//! raises that threshold to the freed block's size, up to 32 MiB, and serves every block below it
//! from the heap. A burst of listings then leaves their bodies' pages in the heap. A fixed
//! threshold keeps large blocks in mappings of their own for the life of the process.
//!
//! glibc gives memory back to the system on its own only from the top of the heap. A burst of
//! work (thousands of objects decoded, listed and written at once) leaves free pages in the
//! middle of it, behind objects that live on, and they stay resident until reused. The operator
//! hands them back at a steady pace instead (`return_free_pages`).

use std::time::Duration;

/// Blocks of this size and larger get a mapping of their own: glibc's initial threshold, kept.
const OWN_MAPPING_FROM_BYTES: i32 = 128 * 1024;

/// Sets the allocator up. Call it before any other thread starts: glibc fixes its arena limit
/// when a second arena is first wanted.
pub fn configure() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only sets allocator parameters, and no other thread runs yet.
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, 1);
        libc::mallopt(libc::M_MMAP_THRESHOLD, OWN_MAPPING_FROM_BYTES);
    }
}

/// How often free pages go back to the system: rarely enough that the walk over the free lists
/// (0.2 to 3.7 ms measured with 10,000 objects, BENCHMARKS.md) costs nothing noticeable, often
/// enough that a burst's leftovers do not stay resident for long.
pub const RETURN_FREE_PAGES_EVERY: Duration = Duration::from_secs(10);

/// Gives the heap's whole free pages back to the system every `period`, for as long as the
/// process runs. The pages stay mapped, so reusing one costs a page fault and nothing more.
pub async fn return_free_pages(period: Duration) {
    let mut ticks = tokio::time::interval(period);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticks.tick().await;
        // The walk holds the allocator's lock; on a blocking thread it stalls no async worker
        // beyond their own allocations.
        let _ = tokio::task::spawn_blocking(trim).await;
    }
}

fn trim() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim takes the allocator's own lock and only releases free memory.
    unsafe {
        libc::malloc_trim(0);
    }
}
