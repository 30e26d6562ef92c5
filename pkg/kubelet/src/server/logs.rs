//! `/containerLogs/{namespace}/{pod}/{container}`: a container's CRI log file as
//! upstream's kubelet serves it (`pkg/kubelet/kuberuntime/logs`).
//!
//! # Design
//! containerd writes each line as `<RFC3339Nano> <stream> <P|F> <message>`; `P` marks a
//! fragment of a longer line, `F` its end. [`read_log`] streams a file through the query's
//! options ([`LogOptions`]: `tailLines` picks the starting line, `sinceSeconds`/`sinceTime`
//! drop older lines, `timestamps` keeps the time, `limitBytes` cuts the output) into a
//! bounded channel, so a slow client slows the reader instead of growing memory. With
//! `follow` it polls the file every [`FOLLOW_POLL`] until the container is no longer running
//! and the file is read to its end, or the client goes away (the channel closes).
//!
//! # Limits
//! - Files are polled, not watched (no inotify crate in the workspace).
//! - Only the current file is read (as upstream): lines rotated away
//!   ([`crate::log_rotation`]) are not shown; `follow` goes on in the new file.
//! - The `stream` parameter (split stdout/stderr, an alpha gate upstream) is ignored.
//! - Partial lines are joined before they are written, with the first fragment's time;
//!   upstream writes each fragment with its own timestamp.

use std::io::{BufRead, SeekFrom};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use bytes::Bytes;
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::jiff::Timestamp;
use tokio::io::{AsyncBufReadExt, AsyncSeekExt, BufReader};
use tokio::sync::mpsc;

/// How often a followed file is checked for new lines.
pub const FOLLOW_POLL: Duration = Duration::from_millis(100);

/// How often a followed container is asked whether it still runs.
pub const LIVENESS_CHECK: Duration = Duration::from_secs(1);

/// Chunks queued towards the client: enough to keep a fast reader busy, small enough that
/// a stalled client holds at most a few hundred KiB.
pub const CHANNEL_CHUNKS: usize = 16;

/// Output is sent in chunks of about this size.
const CHUNK: usize = 16 * 1024;

/// Upstream's `PodLogOptions` as the kubelet reads them from the query.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LogOptions {
    /// Keep streaming until the container stops.
    pub follow: bool,
    /// The previous (terminated) instance of the container.
    pub previous: bool,
    /// Prefix each line with its RFC3339 time (nanoseconds).
    pub timestamps: bool,
    /// Only lines newer than this many seconds.
    pub since_seconds: Option<i64>,
    /// Only lines at or after this time.
    pub since_time: Option<Timestamp>,
    /// Only the last this many lines.
    pub tail_lines: Option<i64>,
    /// Stop after this many bytes.
    pub limit_bytes: Option<i64>,
}

/// Why a log request is refused, with the status upstream's kubelet answers.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LogError {
    /// 400: a bad query, or a container without logs to show (waiting, no previous one).
    #[error("{0}")]
    BadRequest(String),
    /// 404: no such pod or container on this node.
    #[error("{0}")]
    NotFound(String),
    /// 422: options that fail upstream's `ValidatePodLogOptions`.
    #[error("{0}")]
    Invalid(String),
    /// 500: the pod could not be looked up.
    #[error("{0}")]
    Internal(String),
}

/// Go's `strconv.ParseBool`, as upstream's query decoding uses.
fn parse_bool(v: &str) -> Option<bool> {
    match v {
        "1" | "t" | "T" | "TRUE" | "true" | "True" => Some(true),
        "0" | "f" | "F" | "FALSE" | "false" | "False" => Some(false),
        _ => None,
    }
}

impl LogOptions {
    /// Parses the query of a `/containerLogs` request as upstream does (`tail` is the old
    /// name of `tailLines`, `tail=all` means no limit), then validates it.
    ///
    /// # Errors
    /// [`LogError::BadRequest`] for values that do not parse, [`LogError::Invalid`] for
    /// values upstream's validation refuses.
    pub fn from_query(query: Option<&str>) -> Result<LogOptions, LogError> {
        let undecodable =
            || LogError::BadRequest(r#"{"message": "Unable to decode query."}"#.into());
        let mut o = LogOptions::default();
        let pairs: Vec<(String, String)> = form_urlencoded::parse(query.unwrap_or("").as_bytes())
            .into_owned()
            .collect();
        let int = |v: &str| v.parse::<i64>().map_err(|_| undecodable());
        for (k, v) in &pairs {
            match k.as_str() {
                "follow" => o.follow = parse_bool(v).ok_or_else(undecodable)?,
                "previous" => o.previous = parse_bool(v).ok_or_else(undecodable)?,
                "timestamps" => o.timestamps = parse_bool(v).ok_or_else(undecodable)?,
                "sinceSeconds" => o.since_seconds = Some(int(v)?),
                "sinceTime" => {
                    o.since_time = Some(v.parse::<Timestamp>().map_err(|_| undecodable())?)
                }
                "tailLines" => o.tail_lines = Some(int(v)?),
                "tail" if v == "all" => o.tail_lines = None,
                "tail" => o.tail_lines = Some(int(v)?),
                "limitBytes" => o.limit_bytes = Some(int(v)?),
                _ => {}
            }
        }
        let invalid = o.tail_lines.is_some_and(|t| t < 0)
            || o.limit_bytes.is_some_and(|l| l < 1)
            || (o.since_seconds.is_some() && o.since_time.is_some())
            || o.since_seconds.is_some_and(|s| s < 1);
        if invalid {
            return Err(LogError::Invalid(
                r#"{"message": "Invalid request."}"#.into(),
            ));
        }
        Ok(o)
    }

    /// The oldest time a line may have, if any.
    fn since(&self, now: Timestamp) -> Option<Timestamp> {
        self.since_time.or_else(|| {
            self.since_seconds
                .and_then(|s| now.checked_sub(jiff_secs(s)).ok())
        })
    }
}

fn jiff_secs(s: i64) -> k8s_openapi::jiff::SignedDuration {
    k8s_openapi::jiff::SignedDuration::from_secs(s)
}

/// The spec of the container called `name` in any of the pod's container lists.
pub fn has_container(pod: &Pod, name: &str) -> bool {
    let Some(spec) = pod.spec.as_ref() else {
        return false;
    };
    spec.containers.iter().any(|c| c.name == name)
        || spec
            .init_containers
            .iter()
            .flatten()
            .any(|c| c.name == name)
        || spec
            .ephemeral_containers
            .iter()
            .flatten()
            .any(|c| c.name == name)
}

/// Which container instance's log to read (its runtime ID, `containerd://` stripped), from
/// the pod's status as upstream's `validateContainerLogStatus` decides, with its messages.
///
/// # Errors
/// [`LogError::BadRequest`] when there is nothing to read: no previous instance, a
/// container still waiting (with its reason), or no status yet.
pub fn container_to_read(pod: &Pod, container: &str, previous: bool) -> Result<String, LogError> {
    let pod_name = pod.metadata.name.as_deref().unwrap_or_default();
    let status = pod.status.as_ref().and_then(|s| {
        s.container_statuses
            .iter()
            .flatten()
            .chain(s.init_container_statuses.iter().flatten())
            .chain(s.ephemeral_container_statuses.iter().flatten())
            .find(|c| c.name == container)
    });
    let bad = |m: String| LogError::BadRequest(m);
    let Some(status) = status else {
        return Err(bad(format!(
            "container {container:?} in pod {pod_name:?} is not available"
        )));
    };
    let id = |s: &str| s.split_once("://").map_or(s, |(_, id)| id).to_string();
    let last = status
        .last_state
        .as_ref()
        .and_then(|s| s.terminated.as_ref());
    let state = status.state.as_ref();
    let terminated = state.and_then(|s| s.terminated.as_ref());
    let last_id = last
        .and_then(|t| t.container_id.as_deref())
        .filter(|i| !i.is_empty());
    if previous {
        return last_id.map(id).ok_or_else(|| {
            bad(format!(
                "previous terminated container {container:?} in pod {pod_name:?} not found"
            ))
        });
    }
    let terminated_msg = || {
        bad(format!(
            "container {container:?} in pod {pod_name:?} is terminated"
        ))
    };
    if state.and_then(|s| s.running.as_ref()).is_some() {
        return status
            .container_id
            .as_deref()
            .map(id)
            .ok_or_else(terminated_msg);
    }
    if let Some(t) = terminated {
        return match t.container_id.as_deref().filter(|i| !i.is_empty()) {
            Some(c) => Ok(id(c)),
            None => last_id.map(id).ok_or_else(terminated_msg),
        };
    }
    if last.is_some() {
        return last_id.map(id).ok_or_else(terminated_msg);
    }
    if let Some(w) = state.and_then(|s| s.waiting.as_ref()) {
        let reason = w.reason.as_deref().unwrap_or_default();
        let why = match reason {
            "ErrImagePull" => "image can't be pulled",
            "ImagePullBackOff" => "trying and failing to pull image",
            r => r,
        };
        return Err(bad(format!(
            "container {container:?} in pod {pod_name:?} is waiting to start: {why}"
        )));
    }
    Err(bad(format!(
        "container {container:?} in pod {pod_name:?} is waiting to start - no logs yet"
    )))
}

/// One line of a CRI log file.
#[derive(Debug, PartialEq, Eq)]
pub struct CriLine<'a> {
    /// When it was written.
    pub time: Timestamp,
    /// `stdout` or `stderr`.
    pub stream: &'a str,
    /// A fragment of a longer line (`P`), not its end (`F`).
    pub partial: bool,
    /// The message, without the line's newline.
    pub message: &'a [u8],
}

/// Parses `<time> <stream> <tags> <message>\n`; `None` for lines that are not CRI format.
pub fn parse_cri_line(line: &[u8]) -> Option<CriLine<'_>> {
    let line = line.strip_suffix(b"\n").unwrap_or(line);
    let mut parts = line.splitn(4, |b| *b == b' ');
    let time = std::str::from_utf8(parts.next()?).ok()?.parse().ok()?;
    let stream = std::str::from_utf8(parts.next()?).ok()?;
    let tags = parts.next()?;
    let message = parts.next().unwrap_or(b"");
    // Tags are `:`-separated; the first is P or F.
    let partial = tags.split(|b| *b == b':').next() == Some(b"P");
    Some(CriLine {
        time,
        stream,
        partial,
        message,
    })
}

/// Upstream's output time format: RFC3339 in UTC with exactly nine fractional digits.
pub fn format_time(t: Timestamp) -> String {
    format!(
        "{}.{:09}Z",
        t.strftime("%Y-%m-%dT%H:%M:%S"),
        t.subsec_nanosecond()
    )
}

/// The offset where the last `n` log lines of the file start. A log line is a run of
/// partial records ended by a full one, so a long line split by containerd counts once.
///
/// # Blocking
/// Reads the whole file: call it from `spawn_blocking`.
fn tail_offset(path: &Path, n: u64) -> std::io::Result<u64> {
    let mut reader = std::io::BufReader::new(std::fs::File::open(path)?);
    let n = usize::try_from(n).unwrap_or(usize::MAX);
    // Start offsets of the last `n` complete lines, oldest first.
    let mut starts = std::collections::VecDeque::with_capacity(n.min(4096) + 1);
    let (mut offset, mut line_start) = (0u64, 0u64);
    let mut record = Vec::new();
    loop {
        record.clear();
        let read = reader.read_until(b'\n', &mut record)?;
        if read == 0 || !record.ends_with(b"\n") {
            break;
        }
        let partial = parse_cri_line(&record).is_some_and(|l| l.partial);
        offset += read as u64;
        if !partial {
            starts.push_back(line_start);
            if starts.len() > n {
                starts.pop_front();
            }
            line_start = offset;
        }
    }
    Ok(if n == 0 {
        line_start
    } else {
        starts.front().copied().unwrap_or(line_start)
    })
}

/// Shapes parsed lines into the client's bytes (joined fragments, optional timestamps,
/// the byte limit).
struct Shaper {
    since: Option<Timestamp>,
    timestamps: bool,
    remaining: Option<u64>,
    pending: Vec<u8>,
    pending_time: Option<Timestamp>,
}

impl Shaper {
    /// Adds one file line to `out`; false once the byte limit is reached.
    fn push(&mut self, line: &[u8], out: &mut Vec<u8>) -> bool {
        let Some(l) = parse_cri_line(line) else {
            tracing::debug!("skipping a log line that is not in CRI format");
            return true;
        };
        if self.since.is_some_and(|s| l.time < s) {
            self.pending.clear();
            self.pending_time = None;
            return true;
        }
        let time = *self.pending_time.get_or_insert(l.time);
        self.pending.extend_from_slice(l.message);
        if l.partial {
            return true;
        }
        let mut text = Vec::with_capacity(self.pending.len() + 32);
        if self.timestamps {
            text.extend_from_slice(format_time(time).as_bytes());
            text.push(b' ');
        }
        text.append(&mut self.pending);
        text.push(b'\n');
        self.pending_time = None;
        match &mut self.remaining {
            Some(r) if (text.len() as u64) >= *r => {
                out.extend_from_slice(&text[..*r as usize]);
                *r = 0;
                false
            }
            Some(r) => {
                *r -= text.len() as u64;
                out.extend_from_slice(&text);
                true
            }
            None => {
                out.extend_from_slice(&text);
                true
            }
        }
    }
}

/// Whether the container still runs (asked when a followed file has no new lines).
#[async_trait::async_trait]
pub trait Liveness: Send + Sync {
    /// True while the container may write more lines.
    async fn running(&self) -> bool;
}

/// Streams the log file at `path` through `opts` into `tx` until done (see the module
/// docs). Ends early, silently, when the receiver is dropped.
pub async fn read_log(
    path: PathBuf,
    opts: LogOptions,
    live: Box<dyn Liveness>,
    tx: mpsc::Sender<Bytes>,
) {
    if let Err(e) = read_log_inner(&path, &opts, live.as_ref(), &tx).await {
        tracing::debug!(path = %path.display(), error = %e, "reading a container log failed");
    }
}

async fn read_log_inner(
    path: &Path,
    opts: &LogOptions,
    live: &dyn Liveness,
    tx: &mpsc::Sender<Bytes>,
) -> std::io::Result<()> {
    let mut file = tokio::fs::File::open(path).await?;
    let mut inode = file.metadata().await?.ino();
    if let Some(n) = opts.tail_lines {
        let p = path.to_path_buf();
        let n = u64::try_from(n).unwrap_or(0);
        let offset = tokio::task::spawn_blocking(move || tail_offset(&p, n))
            .await
            .map_err(std::io::Error::other)??;
        file.seek(SeekFrom::Start(offset)).await?;
    }
    let mut reader = BufReader::new(file);
    let mut shaper = Shaper {
        since: opts.since(Timestamp::now()),
        timestamps: opts.timestamps,
        remaining: opts.limit_bytes.map(|l| u64::try_from(l).unwrap_or(0)),
        pending: Vec::new(),
        pending_time: None,
    };
    let mut line = Vec::new();
    let mut out = Vec::new();
    let mut finishing = false;
    let mut rotated = false;
    let mut last_check = None;
    loop {
        let n = reader.read_until(b'\n', &mut line).await?;
        if n > 0 && line.ends_with(b"\n") {
            let more = shaper.push(&line, &mut out);
            line.clear();
            if !more {
                break;
            }
            if out.len() >= CHUNK
                && tx
                    .send(Bytes::from(std::mem::take(&mut out)))
                    .await
                    .is_err()
            {
                return Ok(());
            }
            continue;
        }
        if n > 0 {
            // A line still being written: keep it and wait for its end.
            continue;
        }
        // End of the file for now.
        if !out.is_empty()
            && tx
                .send(Bytes::from(std::mem::take(&mut out)))
                .await
                .is_err()
        {
            return Ok(());
        }
        if !opts.follow || finishing {
            break;
        }
        if tx.is_closed() {
            return Ok(());
        }
        if rotated {
            // The old file is read to its end: go on at the start of the new one.
            let f = tokio::fs::File::open(path).await?;
            inode = f.metadata().await?.ino();
            reader = BufReader::new(f);
            rotated = false;
            continue;
        }
        // A new file at the path: the kubelet rotated the log (while it renames, the path
        // may be missing for a moment). One more pass reads what the old file still got.
        if tokio::fs::metadata(path)
            .await
            .is_ok_and(|m| m.ino() != inode)
        {
            rotated = true;
            continue;
        }
        // The runtime is asked at most every LIVENESS_CHECK, as upstream re-checks the
        // container when no write arrived for a second.
        let due = last_check.is_none_or(|t: tokio::time::Instant| t.elapsed() >= LIVENESS_CHECK);
        if due {
            last_check = Some(tokio::time::Instant::now());
            if !live.running().await {
                // One more pass reads what was written before it stopped.
                finishing = true;
                continue;
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(FOLLOW_POLL) => {}
            _ = tx.closed() => return Ok(()),
        }
    }
    // Without follow, a last line without its newline is still shown.
    if !line.is_empty() {
        line.push(b'\n');
        shaper.push(&line, &mut out);
    }
    if !out.is_empty() {
        let _ = tx.send(Bytes::from(out)).await;
    }
    Ok(())
}

/// Starts [`read_log`] on its own task and returns the receiving end.
pub fn spawn_reader(
    path: PathBuf,
    opts: LogOptions,
    live: Box<dyn Liveness>,
) -> mpsc::Receiver<Bytes> {
    let (tx, rx) = mpsc::channel(CHANNEL_CHUNKS);
    tokio::spawn(read_log(path, opts, live, tx));
    rx
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;

    #[test]
    fn query_parsing_and_validation_as_upstream() {
        let o = LogOptions::from_query(Some(
            "follow=true&previous=1&timestamps=true&sinceSeconds=10&tailLines=3&limitBytes=5",
        ))
        .unwrap();
        assert!(o.follow && o.previous && o.timestamps);
        assert_eq!(
            (o.since_seconds, o.tail_lines, o.limit_bytes),
            (Some(10), Some(3), Some(5))
        );
        let o =
            LogOptions::from_query(Some("sinceTime=2024-01-02T03%3A04%3A05Z&tail=all")).unwrap();
        assert_eq!(o.since_time, Some("2024-01-02T03:04:05Z".parse().unwrap()));
        assert_eq!(o.tail_lines, None);
        assert_eq!(LogOptions::from_query(None).unwrap(), LogOptions::default());
        for bad in ["follow=yes", "tailLines=x", "sinceTime=yesterday"] {
            assert!(matches!(
                LogOptions::from_query(Some(bad)),
                Err(LogError::BadRequest(_))
            ));
        }
        for invalid in [
            "tailLines=-1",
            "limitBytes=0",
            "sinceSeconds=0",
            "sinceSeconds=5&sinceTime=2024-01-02T03:04:05Z",
        ] {
            assert!(
                matches!(
                    LogOptions::from_query(Some(invalid)),
                    Err(LogError::Invalid(_))
                ),
                "{invalid}"
            );
        }
    }

    #[test]
    fn container_status_decides_what_to_read() {
        let pod: Pod = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "p"},
            "spec": {"containers": [{"name": "a"}, {"name": "b"}, {"name": "c"}],
                     "initContainers": [{"name": "i"}]},
            "status": {
                "containerStatuses": [
                    {"name": "a", "image": "x", "imageID": "", "ready": true, "restartCount": 1,
                     "containerID": "containerd://new",
                     "state": {"running": {}},
                     "lastState": {"terminated": {"exitCode": 1, "containerID": "containerd://old"}}},
                    {"name": "b", "image": "x", "imageID": "", "ready": false, "restartCount": 0,
                     "state": {"waiting": {"reason": "ContainerCreating"}}},
                    {"name": "c", "image": "x", "imageID": "", "ready": false, "restartCount": 0,
                     "state": {"waiting": {"reason": "ErrImagePull"}}}
                ]
            }
        }))
        .unwrap();
        assert_eq!(container_to_read(&pod, "a", false).unwrap(), "new");
        assert_eq!(container_to_read(&pod, "a", true).unwrap(), "old");
        let err = |c, prev| container_to_read(&pod, c, prev).unwrap_err().to_string();
        assert_eq!(
            err("b", false),
            "container \"b\" in pod \"p\" is waiting to start: ContainerCreating"
        );
        assert_eq!(
            err("b", true),
            "previous terminated container \"b\" in pod \"p\" not found"
        );
        assert_eq!(
            err("c", false),
            "container \"c\" in pod \"p\" is waiting to start: image can't be pulled"
        );
        assert_eq!(
            err("i", false),
            "container \"i\" in pod \"p\" is not available"
        );
        assert!(has_container(&pod, "i") && !has_container(&pod, "z"));
    }

    #[test]
    fn cri_lines_parse_and_times_format_with_nine_digits() {
        let l = parse_cri_line(b"2024-01-02T03:04:05.5Z stdout P hello world\n").unwrap();
        assert_eq!(l.stream, "stdout");
        assert!(l.partial);
        assert_eq!(l.message, b"hello world");
        assert_eq!(format_time(l.time), "2024-01-02T03:04:05.500000000Z");
        let l = parse_cri_line(b"2024-01-02T03:04:05Z stderr F\n").unwrap();
        assert!(!l.partial);
        assert_eq!(l.message, b"");
        assert!(parse_cri_line(b"garbage\n").is_none());
    }

    #[test]
    fn tail_offsets_count_lines_from_the_end() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("0.log");
        let (a, b1, b2, c) = (
            "2024-01-02T03:04:01Z stdout F a\n",
            "2024-01-02T03:04:02Z stdout P b\n",
            "2024-01-02T03:04:02Z stdout F b\n",
            "2024-01-02T03:04:03Z stdout F c\n",
        );
        std::fs::write(&p, [a, b1, b2, c].concat()).unwrap();
        let len = |parts: &[&str]| parts.iter().map(|s| s.len() as u64).sum::<u64>();
        assert_eq!(tail_offset(&p, 1).unwrap(), len(&[a, b1, b2]));
        // The split line counts once.
        assert_eq!(tail_offset(&p, 2).unwrap(), len(&[a]));
        assert_eq!(tail_offset(&p, 3).unwrap(), 0);
        assert_eq!(tail_offset(&p, 10).unwrap(), 0);
        assert_eq!(tail_offset(&p, 0).unwrap(), len(&[a, b1, b2, c]));
    }

    struct Flag(Arc<AtomicBool>);

    #[async_trait::async_trait]
    impl Liveness for Flag {
        async fn running(&self) -> bool {
            self.0.load(Ordering::SeqCst)
        }
    }

    async fn collect(mut rx: mpsc::Receiver<Bytes>) -> String {
        let mut s = Vec::new();
        while let Some(b) = rx.recv().await {
            s.extend_from_slice(&b);
        }
        String::from_utf8(s).unwrap()
    }

    const LOG: &str = "2024-01-02T03:04:01Z stdout F one\n\
        2024-01-02T03:04:02.25Z stdout P tw\n\
        2024-01-02T03:04:02.5Z stdout F o\n\
        2024-01-02T03:04:03Z stderr F three\n";

    fn opts(q: &str) -> LogOptions {
        LogOptions::from_query(Some(q)).unwrap()
    }

    async fn read(p: &Path, q: &str) -> String {
        let live = Box::new(Flag(Arc::new(AtomicBool::new(false))));
        collect(spawn_reader(p.to_path_buf(), opts(q), live)).await
    }

    #[tokio::test]
    async fn options_shape_the_output() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("0.log");
        std::fs::write(&p, LOG).unwrap();
        assert_eq!(read(&p, "").await, "one\ntwo\nthree\n");
        assert_eq!(read(&p, "tailLines=2").await, "two\nthree\n");
        assert_eq!(read(&p, "tailLines=0").await, "");
        assert_eq!(read(&p, "limitBytes=6").await, "one\ntw");
        assert_eq!(
            read(&p, "timestamps=true&tailLines=2").await,
            "2024-01-02T03:04:02.250000000Z two\n2024-01-02T03:04:03.000000000Z three\n"
        );
        assert_eq!(
            read(&p, "sinceTime=2024-01-02T03:04:02Z").await,
            "two\nthree\n"
        );
        // Lines older than sinceSeconds (all of these) are dropped.
        assert_eq!(read(&p, "sinceSeconds=60").await, "");
    }

    #[tokio::test]
    async fn follow_streams_new_lines_until_the_container_stops() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("0.log");
        std::fs::write(&p, "2024-01-02T03:04:01Z stdout F one\n").unwrap();
        let running = Arc::new(AtomicBool::new(true));
        let mut rx = spawn_reader(
            p.clone(),
            opts("follow=true"),
            Box::new(Flag(running.clone())),
        );
        assert_eq!(&rx.recv().await.unwrap()[..], b"one\n");
        {
            use std::io::Write;
            let mut f = std::fs::OpenOptions::new().append(true).open(&p).unwrap();
            // Half a line first: nothing is sent until it ends.
            f.write_all(b"2024-01-02T03:04:02Z stdout F tw").unwrap();
            f.flush().unwrap();
            tokio::time::sleep(FOLLOW_POLL * 3).await;
            f.write_all(b"o\n").unwrap();
        }
        assert_eq!(&rx.recv().await.unwrap()[..], b"two\n");
        running.store(false, Ordering::SeqCst);
        assert_eq!(collect(rx).await, "");
    }

    #[tokio::test]
    async fn follow_goes_on_in_the_new_file_after_a_rotation() {
        use std::io::Write;
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("0.log");
        std::fs::write(&p, "2024-01-02T03:04:01Z stdout F one\n").unwrap();
        let running = Arc::new(AtomicBool::new(true));
        let mut rx = spawn_reader(
            p.clone(),
            opts("follow=true"),
            Box::new(Flag(running.clone())),
        );
        assert_eq!(&rx.recv().await.unwrap()[..], b"one\n");
        // Rotated as the kubelet does: renamed away, a last line still lands in the old
        // file, then the runtime reopens a new file at the path.
        let old = dir.path().join("0.log.20240102-030402");
        std::fs::rename(&p, &old).unwrap();
        let mut f = std::fs::OpenOptions::new().append(true).open(&old).unwrap();
        f.write_all(b"2024-01-02T03:04:02Z stdout F two\n").unwrap();
        std::fs::write(&p, "2024-01-02T03:04:03Z stdout F three\n").unwrap();
        let mut got = String::new();
        while got != "two\nthree\n" {
            let chunk = tokio::time::timeout(Duration::from_secs(10), rx.recv())
                .await
                .expect("the new file's line")
                .unwrap();
            got.push_str(std::str::from_utf8(&chunk).unwrap());
            assert!("two\nthree\n".starts_with(&got), "{got}");
        }
        running.store(false, Ordering::SeqCst);
        assert_eq!(collect(rx).await, "");
    }
}
