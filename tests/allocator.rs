//! The allocator set-up, in a process of its own: glibc's settings are process-wide.

#![cfg(all(target_os = "linux", target_env = "gnu"))]

use std::hint::black_box;

/// Bytes glibc holds in mappings of their own, one per large block.
fn own_mapping_bytes() -> usize {
    // SAFETY: mallinfo2 only reads the allocator's counters.
    unsafe { libc::mallinfo2().hblkhd }
}

const LARGE: usize = 512 * 1024;

#[test]
fn a_large_block_freed_and_taken_again_still_gets_a_mapping_of_its_own() {
    ecs_image_operator::allocator::configure();
    // The first large block is mapped by default, and freeing it is what would make glibc serve
    // the next one from the heap.
    drop(black_box(vec![1u8; LARGE]));
    let before = own_mapping_bytes();
    let again = black_box(vec![1u8; LARGE]);
    let held = own_mapping_bytes();
    drop(again);
    assert!(
        held >= before + LARGE,
        "the second large block came from the heap: mapped bytes {before} → {held}"
    );
    assert!(
        own_mapping_bytes() < held,
        "freeing a mapped block hands it back at once"
    );
}
