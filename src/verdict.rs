//! The typed outcome of a command, and its exit code.

/// What a command found. Scripts sort results by exit code, never by prose.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Verdict {
    /// Every property held (exit 0).
    Holds,
    /// A safety property was violated: something bad happened (exit 1).
    SafetyViolation,
    /// Bad usage or a broken environment: nothing was checked (exit 2).
    UsageOrEnvironment,
    /// A liveness property was violated: something good never happened (exit 3).
    LivenessViolation,
}

impl Verdict {
    pub fn exit_code(self) -> i32 {
        match self {
            Verdict::Holds => 0,
            Verdict::SafetyViolation => 1,
            Verdict::UsageOrEnvironment => 2,
            Verdict::LivenessViolation => 3,
        }
    }

    /// The verdict of several checks together: the worst one wins, a safety
    /// violation outranking a liveness violation.
    pub fn combine(self, other: Verdict) -> Verdict {
        let rank = |verdict: Verdict| match verdict {
            Verdict::Holds => 0,
            Verdict::LivenessViolation => 1,
            Verdict::SafetyViolation => 2,
            Verdict::UsageOrEnvironment => 3,
        };
        if rank(other) > rank(self) {
            other
        } else {
            self
        }
    }
}
