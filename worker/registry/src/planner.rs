//! The upload part planner, sans I/O: stores that take an upload in aligned parts (Skynet's TUS
//! pieces of 40 MiB, S3 multipart parts of at least 5 MiB) get chunks of any size from OCI
//! clients, one request at a time. Given how much unaligned tail an upload already holds and the
//! length of each incoming chunk, the planner says which bytes complete a part (upload it now)
//! and which extend the tail (keep them for the next request). It only counts bytes; the store
//! moves them.
//!
//! Invariants (property-tested below): parts are exactly `align` bytes; the tail is always
//! shorter than `align`; the bytes keep their order; nothing is dropped or duplicated, whatever
//! the chunk sizes and however the stream is split across requests.

/// What to do with the next `len` bytes of an incoming chunk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cut {
    /// These bytes, after the tail held so far, complete one part: upload `tail + bytes` now.
    CompletesPart { len: u64 },
    /// These bytes extend the tail (no part is complete yet).
    ExtendsTail { len: u64 },
}

/// The planner's state for one request: the part size and the bytes held toward the next part.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PartPlanner {
    align: u64,
    held: u64,
}

impl PartPlanner {
    /// A planner for parts of `align` bytes (at least 1) over an upload whose stored tail holds
    /// `stored_tail` bytes (taken modulo `align`: a whole part is never a tail).
    pub fn new(align: u64, stored_tail: u64) -> Self {
        let align = align.max(1);
        Self {
            align,
            held: stored_tail % align,
        }
    }

    /// The bytes held toward the next part: the stored tail plus what this request added to it.
    pub fn held(&self) -> u64 {
        self.held
    }

    /// The part size.
    pub fn align(&self) -> u64 {
        self.align
    }

    /// How an incoming chunk of `len` bytes is cut: zero or more parts, then at most one tail
    /// extension, in stream order.
    pub fn cut(&mut self, len: u64) -> Vec<Cut> {
        let mut cuts = Vec::new();
        let mut left = len;
        while left > 0 {
            let room = self.align - self.held;
            if left >= room {
                cuts.push(Cut::CompletesPart { len: room });
                self.held = 0;
                left -= room;
            } else {
                cuts.push(Cut::ExtendsTail { len: left });
                self.held += left;
                left = 0;
            }
        }
        cuts
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIB: u64 = 1024 * 1024;

    #[test]
    fn a_chunk_completes_parts_then_extends_the_tail() {
        let mut planner = PartPlanner::new(10, 3);
        assert_eq!(
            planner.cut(25),
            vec![
                Cut::CompletesPart { len: 7 },
                Cut::CompletesPart { len: 10 },
                Cut::ExtendsTail { len: 8 }
            ]
        );
        assert_eq!(planner.held(), 8);
        assert_eq!(planner.cut(2), vec![Cut::CompletesPart { len: 2 }]);
        assert_eq!(planner.held(), 0);
        assert_eq!(planner.cut(0), vec![]);
    }

    #[test]
    fn a_stored_tail_of_whole_parts_holds_nothing() {
        assert_eq!(PartPlanner::new(10, 20).held(), 0);
        assert_eq!(PartPlanner::new(0, 5).align(), 1);
    }

    /// A small deterministic generator (xorshift64*): the property test needs no dependency.
    struct Random(u64);

    impl Random {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
        }

        fn below(&mut self, n: u64) -> u64 {
            self.next() % n.max(1)
        }
    }

    /// Replays a stream through the planner as a store would, request by request, keeping only
    /// the tail between requests; returns (part lengths, tail length) and checks the order.
    fn replay(align: u64, requests: &[Vec<u64>]) -> (Vec<u64>, u64) {
        let mut parts = Vec::new();
        let mut tail = 0u64;
        let mut offset = 0u64; // bytes of the stream seen so far
        for chunks in requests {
            let mut planner = PartPlanner::new(align, tail);
            let mut piece = tail; // bytes of the part being assembled
            for &len in chunks {
                let mut taken = 0;
                for cut in planner.cut(len) {
                    match cut {
                        Cut::CompletesPart { len } => {
                            piece += len;
                            parts.push(piece);
                            // A part starts right after the previous one: order is kept.
                            assert_eq!(parts.len() as u64 * align, offset + taken + len);
                            piece = 0;
                            taken += len;
                        }
                        Cut::ExtendsTail { len } => {
                            piece += len;
                            taken += len;
                        }
                    }
                }
                assert_eq!(taken, len, "every byte of the chunk is placed once");
                offset += len;
            }
            assert_eq!(planner.held(), piece);
            tail = piece;
        }
        (parts, tail)
    }

    #[test]
    fn any_chunk_sequence_at_any_alignment_gives_whole_parts_and_a_short_tail() {
        let mut random = Random(0x9e37_79b9_7f4a_7c15);
        for case in 0..2000 {
            let align = match case % 4 {
                0 => 40 * MIB, // Skynet TUS pieces
                1 => 5 * MIB,  // S3 multipart minimum
                2 => 1 + random.below(64),
                _ => 1 + random.below(4096),
            };
            let requests: Vec<Vec<u64>> = (0..1 + random.below(6))
                .map(|_| {
                    (0..random.below(5))
                        .map(|_| match random.below(4) {
                            0 => 0,
                            1 => random.below(align),
                            2 => align - random.below(2).min(align - 1),
                            _ => random.below(3 * align + 7),
                        })
                        .collect()
                })
                .collect();
            let total: u64 = requests.iter().flatten().sum();
            let (parts, tail) = replay(align, &requests);
            assert!(parts.iter().all(|&p| p == align), "case {case}: {parts:?}");
            assert!(tail < align, "case {case}: tail {tail} of {align}");
            assert_eq!(
                parts.len() as u64 * align + tail,
                total,
                "case {case}: {requests:?} at {align}"
            );
        }
    }
}
