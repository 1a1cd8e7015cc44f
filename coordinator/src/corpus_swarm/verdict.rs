//! The deterministic-task rule for corpus chunks, as a pure function: every chunk runs on two
//! distinct peers and their result roots must agree; a disagreement asks for a further run,
//! and the root that a majority of the runs name (at least two of them, and more than any
//! other root) is the chunk's result. Runs that name another root failed verification.
//!
//! A chunk whose runs still have no majority after [`MAX_RUNS`] (several liars, or too few
//! honest peers) is settled by the coordinator computing it itself ([`Verdict::Local`]).

use canopy_protocol::Digest;

/// Runs of one chunk after which the coordinator settles it locally.
pub const MAX_RUNS: usize = 4;

/// What the runs of one chunk so far decide.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Not decided: this many more runs are needed (on peers that have not run the chunk).
    NeedRuns(usize),
    /// The chunk's result: runs naming it are accepted, the others failed.
    Agreed(Digest),
    /// No majority after [`MAX_RUNS`] runs: the coordinator computes the chunk.
    Local,
}

/// Decides a chunk from the result roots of its runs, in the order they arrived (each from a
/// distinct peer).
pub fn verdict(results: &[Digest]) -> Verdict {
    if results.len() < 2 {
        return Verdict::NeedRuns(2 - results.len());
    }
    // Votes per root, in order of first appearance (so a tie is reported the same way
    // whatever the map's order).
    let mut votes: Vec<(Digest, usize)> = Vec::new();
    for r in results {
        match votes.iter_mut().find(|(d, _)| d == r) {
            Some((_, n)) => *n += 1,
            None => votes.push((*r, 1)),
        }
    }
    let best = votes.iter().map(|(_, n)| *n).max().unwrap_or(0);
    let leaders: Vec<&(Digest, usize)> = votes.iter().filter(|(_, n)| *n == best).collect();
    match leaders.as_slice() {
        [(root, n)] if *n >= 2 => Verdict::Agreed(*root),
        _ if results.len() >= MAX_RUNS => Verdict::Local,
        _ => Verdict::NeedRuns(1),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(x: &str) -> Digest {
        Digest::of(x.as_bytes())
    }

    #[test]
    fn two_agreeing_runs_decide_a_chunk() {
        assert_eq!(verdict(&[]), Verdict::NeedRuns(2));
        assert_eq!(verdict(&[d("a")]), Verdict::NeedRuns(1));
        assert_eq!(verdict(&[d("a"), d("a")]), Verdict::Agreed(d("a")));
    }

    #[test]
    fn a_disagreement_asks_for_a_third_run_and_the_majority_wins() {
        // Honest first, liar second, and the other way round.
        assert_eq!(verdict(&[d("honest"), d("liar")]), Verdict::NeedRuns(1));
        assert_eq!(
            verdict(&[d("honest"), d("liar"), d("honest")]),
            Verdict::Agreed(d("honest"))
        );
        assert_eq!(
            verdict(&[d("liar"), d("honest"), d("honest")]),
            Verdict::Agreed(d("honest"))
        );
    }

    #[test]
    fn without_a_majority_more_runs_then_the_coordinator_decide() {
        // Two liars with different lies and one honest run: no majority yet.
        assert_eq!(
            verdict(&[d("x"), d("y"), d("honest")]),
            Verdict::NeedRuns(1)
        );
        assert_eq!(
            verdict(&[d("x"), d("y"), d("honest"), d("honest")]),
            Verdict::Agreed(d("honest"))
        );
        // Two colluding liars against two honest runs: a tie, settled locally.
        assert_eq!(
            verdict(&[d("lie"), d("honest"), d("lie"), d("honest")]),
            Verdict::Local
        );
        assert_eq!(verdict(&[d("a"), d("b"), d("c"), d("e")]), Verdict::Local);
        // Two colluding liars first: they agree, and the rule cannot tell (the reason the
        // two runs go to distinct peers, and why a build wants many independent peers).
        assert_eq!(verdict(&[d("lie"), d("lie")]), Verdict::Agreed(d("lie")));
    }
}
