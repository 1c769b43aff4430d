//! States of runs, jobs and steps, and the words the API shows for them (GitHub's: `status` is
//! `queued`, `in_progress` or `completed`; `conclusion` is set once completed).

/// A run's state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RunState {
    Queued,
    InProgress,
    Completed,
}

impl RunState {
    pub fn as_str(self) -> &'static str {
        match self {
            RunState::Queued => "queued",
            RunState::InProgress => "in_progress",
            RunState::Completed => "completed",
        }
    }

    pub fn parse(s: &str) -> Option<RunState> {
        Some(match s {
            "queued" => RunState::Queued,
            "in_progress" => RunState::InProgress,
            "completed" => RunState::Completed,
            _ => return None,
        })
    }
}

/// A job's state. `Waiting` (for the jobs it needs) is shown as `queued`, as GitHub shows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JobState {
    Waiting,
    Queued,
    /// Handed to a runner, not yet acknowledged.
    Leased,
    InProgress,
    Completed,
}

impl JobState {
    pub fn as_str(self) -> &'static str {
        match self {
            JobState::Waiting => "waiting",
            JobState::Queued => "queued",
            JobState::Leased => "leased",
            JobState::InProgress => "in_progress",
            JobState::Completed => "completed",
        }
    }

    pub fn parse(s: &str) -> Option<JobState> {
        Some(match s {
            "waiting" => JobState::Waiting,
            "queued" => JobState::Queued,
            "leased" => JobState::Leased,
            "in_progress" => JobState::InProgress,
            "completed" => JobState::Completed,
            _ => return None,
        })
    }

    /// The API's `status`.
    pub fn status(self) -> &'static str {
        match self {
            JobState::Waiting | JobState::Queued | JobState::Leased => "queued",
            JobState::InProgress => "in_progress",
            JobState::Completed => "completed",
        }
    }
}

/// How a completed run, job or step ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Conclusion {
    Success,
    Failure,
    Cancelled,
    Skipped,
    TimedOut,
}

impl Conclusion {
    pub fn as_str(self) -> &'static str {
        match self {
            Conclusion::Success => "success",
            Conclusion::Failure => "failure",
            Conclusion::Cancelled => "cancelled",
            Conclusion::Skipped => "skipped",
            Conclusion::TimedOut => "timed_out",
        }
    }

    pub fn parse(s: &str) -> Option<Conclusion> {
        Some(match s {
            "success" => Conclusion::Success,
            "failure" => Conclusion::Failure,
            "cancelled" => Conclusion::Cancelled,
            "skipped" => Conclusion::Skipped,
            "timed_out" => Conclusion::TimedOut,
            _ => return None,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn words_round_trip() {
        for s in [RunState::Queued, RunState::InProgress, RunState::Completed] {
            assert_eq!(RunState::parse(s.as_str()), Some(s));
        }
        for s in [JobState::Waiting, JobState::Queued, JobState::Leased, JobState::InProgress, JobState::Completed] {
            assert_eq!(JobState::parse(s.as_str()), Some(s));
        }
        for c in
            [Conclusion::Success, Conclusion::Failure, Conclusion::Cancelled, Conclusion::Skipped, Conclusion::TimedOut]
        {
            assert_eq!(Conclusion::parse(c.as_str()), Some(c));
        }
        assert_eq!(JobState::Waiting.status(), "queued");
    }
}
