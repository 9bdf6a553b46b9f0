//! Shared helpers of the fuzz targets in `fuzz_targets/`: a counting global
//! allocator (so a target can assert that one input never makes the code
//! under test hold more heap than the limits it was given allow), a
//! deterministic chunker (the same bytes fed in arbitrary pieces, as a
//! socket would deliver them) and a small reader for the control bytes that
//! open an input. See docs/fuzzing.md.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicIsize, Ordering::Relaxed};

/// The system allocator, counting the bytes live and the peak since the
/// last [`reset_peak`]. Installed for every target (one global allocator
/// per binary): counting costs two relaxed atomics per call.
pub struct Counting;

static LIVE: AtomicIsize = AtomicIsize::new(0);
static PEAK: AtomicIsize = AtomicIsize::new(0);

fn grew(n: usize) {
    let live = LIVE.fetch_add(n as isize, Relaxed) + n as isize;
    PEAK.fetch_max(live, Relaxed);
}

fn shrank(n: usize) {
    LIVE.fetch_sub(n as isize, Relaxed);
}

// SAFETY: every method forwards the caller's arguments unchanged to
// `System`, which upholds the `GlobalAlloc` contract; the counters are
// plain atomics touched only after the forwarded call and never affect
// the pointers returned. Tested by `tests::counts_*` below.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: same contract as ours (non-zero size is the caller's duty).
        let p = unsafe { System.alloc(layout) };
        if !p.is_null() {
            grew(layout.size());
        }
        p
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        // SAFETY: as for `alloc`.
        let p = unsafe { System.alloc_zeroed(layout) };
        if !p.is_null() {
            grew(layout.size());
        }
        p
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: `ptr` was returned by `System` through this allocator
        // with `layout` (the caller's guarantee).
        unsafe { System.dealloc(ptr, layout) };
        shrank(layout.size());
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: the caller guarantees `ptr`/`layout` came from this
        // allocator (hence from `System`) and that `new_size` is valid.
        let p = unsafe { System.realloc(ptr, layout, new_size) };
        if !p.is_null() {
            if new_size >= layout.size() {
                grew(new_size - layout.size());
            } else {
                shrank(layout.size() - new_size);
            }
        }
        p
    }
}

#[global_allocator]
static ALLOC: Counting = Counting;

/// Bytes live on the heap right now (all threads).
pub fn live() -> isize {
    LIVE.load(Relaxed)
}

/// Starts a new peak measurement at the current live size.
pub fn reset_peak() {
    PEAK.store(LIVE.load(Relaxed), Relaxed);
}

/// Runs `f` and returns its result with the most heap that was live during
/// it, above what was live when it started.
pub fn peak_during<R>(f: impl FnOnce() -> R) -> (R, usize) {
    let base = live();
    reset_peak();
    let r = f();
    let peak = PEAK.load(Relaxed);
    (r, (peak - base).max(0) as usize)
}

/// Reads the control bytes at the start of an input; missing bytes read
/// as 0, so any input (a raw capture too) is a valid one.
pub struct Control<'a> {
    data: &'a [u8],
}

impl<'a> Control<'a> {
    /// Splits `n` control bytes off `data`: (control, rest).
    pub fn split(data: &'a [u8], n: usize) -> (Control<'a>, &'a [u8]) {
        let n = n.min(data.len());
        (Control { data: &data[..n] }, &data[n..])
    }

    pub fn byte(&self, i: usize) -> u8 {
        self.data.get(i).copied().unwrap_or(0)
    }

    pub fn u32(&self, i: usize) -> u32 {
        u32::from_le_bytes([
            self.byte(i),
            self.byte(i + 1),
            self.byte(i + 2),
            self.byte(i + 3),
        ])
    }
}

/// Cuts `data` into consecutive pieces whose sizes follow `seed`: many
/// 1..8-byte pieces (frame heads split everywhere), some up to 64 and
/// 1024 bytes, some the whole rest. Seed 0 yields the input in one piece.
pub fn chunks(data: &[u8], seed: u32) -> Vec<&[u8]> {
    if seed == 0 {
        return vec![data];
    }
    let mut state = u64::from(seed) | (u64::from(seed) << 32) | 1;
    let mut out = Vec::new();
    let mut rest = data;
    while !rest.is_empty() {
        // xorshift64: cheap and deterministic.
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        let r = state as usize;
        let n = match r % 4 {
            0 => 1 + (r >> 2) % 8,
            1 => 1 + (r >> 2) % 64,
            2 => 1 + (r >> 2) % 1024,
            _ => rest.len(),
        };
        let (a, b) = rest.split_at(n.min(rest.len()));
        out.push(a);
        rest = b;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_an_allocation_and_its_release() {
        let (v, peak) = peak_during(|| vec![7u8; 1 << 20]);
        assert!(peak >= 1 << 20, "peak {peak}");
        let before = live();
        drop(v);
        // Other test threads may allocate meanwhile: compare loosely.
        assert!(live() < before, "live did not drop after a 1 MiB free");
    }

    #[test]
    fn counts_realloc_growth() {
        let (_, peak) = peak_during(|| {
            let mut v: Vec<u8> = Vec::with_capacity(16);
            v.resize(1 << 20, 1);
            v
        });
        assert!(peak >= 1 << 20, "peak {peak}");
    }

    #[test]
    fn chunks_cover_the_input_in_order() {
        let data: Vec<u8> = (0..5000u32).map(|i| i as u8).collect();
        for seed in [0, 1, 2, 0xdead_beef] {
            let joined: Vec<u8> = chunks(&data, seed).concat();
            assert_eq!(joined, data);
        }
        assert_eq!(chunks(&data, 0).len(), 1);
        assert!(chunks(&data, 1).len() > 1);
    }

    #[test]
    fn control_reads_missing_bytes_as_zero() {
        let (c, rest) = Control::split(&[1, 2], 4);
        assert_eq!((c.byte(0), c.byte(1), c.byte(3)), (1, 2, 0));
        assert!(rest.is_empty());
        assert_eq!(c.u32(0), 0x0201);
    }
}
