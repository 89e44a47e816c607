//! Which result code each module's error becomes: every mapping, in one place.
//!
//! Each error enum a call can end on gets its [`Code`] here, by a match that lists
//! every variant: a new variant does not compile until someone has decided its code
//! (no `_ =>` arm swallows it). The errors that become a [`Failure`] as they are (with
//! their own message, plus "the plugin was not run" where that is what happened)
//! convert with `From`; the others give their code to the sentence the pipeline
//! writes around them (UPM's, or "the config is invalid: ...").
//!
//! Not errors, and so not here: the refusals whose code *is* the decision (the
//! whitelist, schema validation, trust verdicts, a usage error) and how a plugin's end
//! becomes an outcome (`outcome`), each made where it is decided.

use crate::audit::AuditError;
use crate::config::ConfigError;
use crate::container::ContainerError;
use crate::error::{Code, Failure};
use crate::integrity::IntegrityError;
use crate::launch::LaunchError;
use crate::request::RequestError;
use crate::sandbox::grants::{GrantError, Why};
use crate::sandbox::seccomp::SeccompError;
use crate::sandbox::SandboxError;
use crate::schema::SchemaError;
use crate::spawn::stop::Stopped;
use crate::spawn::SpawnError;
use crate::trust::TrustError;

/// The result code an error becomes.
pub trait Coded {
    fn code(&self) -> Code;
}

impl Coded for RequestError {
    fn code(&self) -> Code {
        use RequestError as E;
        match self {
            E::TooLarge { .. } => Code::RequestTooLarge,
            // upm's own stop interrupted the read: the call was cancelled, not malformed.
            E::Read(io) if Stopped::is(io) => Code::Cancelled,
            E::Read(_)
            | E::Empty
            | E::Utf8 { .. }
            | E::ArgvUtf8(_)
            | E::TooDeep
            | E::Json(_)
            | E::ArgsJson(_)
            | E::WideInteger(_)
            | E::Shape(_)
            | E::BadRequestId => Code::BadRequest,
        }
    }
}

impl Coded for ConfigError {
    fn code(&self) -> Code {
        use ConfigError as E;
        match self {
            E::Missing { .. }
            | E::Unreadable { .. }
            | E::NotAFile { .. }
            | E::TooLarge { .. }
            | E::Unsafe { .. }
            | E::NotJson { .. }
            | E::Invalid { .. } => Code::ConfigError,
        }
    }
}

/// A schema that does not load is the config's problem, whatever is wrong with it.
impl Coded for SchemaError {
    fn code(&self) -> Code {
        use SchemaError as E;
        match self {
            E::Read { .. }
            | E::NotAFile { .. }
            | E::TooLarge { .. }
            | E::Unsafe { .. }
            | E::Parse { .. }
            | E::UnsupportedDraft { .. }
            | E::Invalid { .. }
            | E::BadUri { .. }
            | E::NonLocalReference { .. }
            | E::ReferenceUnreadable { .. }
            | E::TooManyFiles { .. }
            | E::Compile { .. }
            | E::Bundle { .. }
            | E::Grant { .. } => Code::ConfigError,
        }
    }
}

/// A profile that does not load (or compile) is a config problem, never a degradation.
impl Coded for SeccompError {
    fn code(&self) -> Code {
        use SeccompError as E;
        match self {
            E::Read { .. }
            | E::TooLarge { .. }
            | E::NotAFile { .. }
            | E::Unsafe { .. }
            | E::Parse { .. }
            | E::UnknownAction { .. }
            | E::RefusedAction { .. }
            | E::ErrnoWithoutErrnoAction { .. }
            | E::ErrnoOutOfRange { .. }
            | E::UnknownSyscall { .. }
            | E::NoSyscallNames { .. }
            | E::NameAndNames { .. }
            | E::UnknownOperator { .. }
            | E::BadArgIndex { .. }
            | E::StrayValueTwo { .. }
            | E::RepeatedArgIndex { .. }
            | E::UnknownArch { .. }
            | E::UnknownCapability { .. }
            | E::BadMinKernel { .. }
            | E::ArchitecturesAndArchMap { .. }
            | E::Unsupported { .. }
            | E::KernelVersion { .. }
            | E::ProgramTooLarge { .. }
            | E::EngineProfile { .. } => Code::ConfigError,
        }
    }
}

/// Nothing runs, or is answered, that the log does not hold.
impl Coded for AuditError {
    fn code(&self) -> Code {
        use AuditError as E;
        match self {
            E::Open { .. }
            | E::NotRegular { .. }
            | E::Lock { .. }
            | E::Read { .. }
            | E::Write { .. }
            | E::Rotate { .. }
            | E::Corrupt { .. }
            | E::Entry { .. }
            | E::Output(_)
            | E::Serialize(_)
            | E::Settings(_)
            | E::WriterPanicked
            | E::Key { .. }
            | E::KeyIo { .. } => Code::AuditError,
        }
    }
}

/// Any failed check of the signature (strict mode refuses the call with it).
impl Coded for TrustError {
    fn code(&self) -> Code {
        use TrustError as E;
        match self {
            E::Unsigned { .. }
            | E::BadSigFile { .. }
            | E::NoKeysDir { .. }
            | E::KeysDir { .. }
            | E::UnknownKey { .. }
            | E::BadSignature { .. }
            | E::Changed { .. }
            | E::NotCovered { .. }
            | E::Unreadable { .. }
            | E::NotUtf8 { .. }
            | E::DuplicateLabel { .. }
            | E::TooOld { .. }
            | E::Settings { .. }
            | E::EnvironmentPythonPath { .. }
            | E::Key { .. }
            | E::Write { .. } => Code::UntrustedConfig,
        }
    }
}

impl Coded for IntegrityError {
    fn code(&self) -> Code {
        use IntegrityError as E;
        match self {
            E::Mismatch { .. } | E::ManifestMismatch { .. } => Code::IntegrityMismatch,
            E::Unsafe { .. } => Code::UnsafePluginFile,
            E::Open { .. } | E::Snapshot { .. } => Code::PluginStartFailed,
        }
    }
}

impl Coded for SandboxError {
    fn code(&self) -> Code {
        use SandboxError as E;
        match self {
            E::Profile(e) => e.code(),
            E::Unavailable { .. } => Code::SandboxUnavailable,
        }
    }
}

impl Coded for SpawnError {
    fn code(&self) -> Code {
        use SpawnError as E;
        match self {
            E::Sandbox(s) => s.code(),
            E::IdMap(_) | E::Limits(_) | E::ParentPidfd(_) | E::ExecPath(_) | E::ScriptName(_) => {
                Code::SandboxUnavailable
            }
            E::Pipe(_) | E::Clone(_) | E::Stack(_) => Code::PluginStartFailed,
        }
    }
}

impl Coded for ContainerError {
    fn code(&self) -> Code {
        use ContainerError as E;
        match self {
            E::Profile(e) => e.code(),
            E::UnknownEngine(_) | E::NotContainer(_) => Code::ConfigError,
            E::Command { .. } => Code::PluginStartFailed,
            E::NoEngine { .. }
            | E::NoRuntime(_)
            | E::Workdir { .. }
            | E::Spawn { .. }
            | E::Engine { .. }
            | E::Info { .. }
            | E::LimitsUnenforced { .. }
            | E::ImageVolumes { .. } => Code::SandboxUnavailable,
        }
    }
}

impl Coded for LaunchError {
    fn code(&self) -> Code {
        use LaunchError as E;
        match self {
            E::Integrity(e) => e.code(),
            E::Workdir(_) => Code::SandboxUnavailable,
            E::NotFound { .. } | E::PythonPath(_) | E::ProjectRoot(_) => Code::PluginStartFailed,
            E::PythonSymlink { .. } => Code::UnsafePluginFile,
            E::Nul(_) => Code::ConfigError,
            E::Stdin(_) => Code::Internal,
        }
    }
}

/// A refused grant is the call's argument at fault, as a schema violation is (10): the
/// config is sound and the sandbox could be built. Only a root of the config's that
/// cannot be opened now is the config's (5).
impl Coded for GrantError {
    fn code(&self) -> Code {
        match &self.why {
            Why::Root { .. } => Code::ConfigError,
            Why::NotString
            | Why::Nul
            | Why::Relative
            | Why::DotDot
            | Why::Outside
            | Why::Missing
            | Why::SymlinkOut(_)
            | Why::SymlinkLoop(_)
            | Why::NotFileOrDir
            | Why::FileAsDirectory
            | Why::Open(_) => Code::InvalidArgs,
        }
    }
}

/// Refused before anything is prepared: it names the argument and the roots.
impl From<GrantError> for Failure {
    fn from(e: GrantError) -> Failure {
        Failure::new(e.code(), format!("{e}; nothing was run")).with_details(e.details())
    }
}

/// Its own sentence, as the caller reads it.
impl From<RequestError> for Failure {
    fn from(e: RequestError) -> Failure {
        Failure::new(e.code(), e.to_string())
    }
}

/// The errors of getting a plugin ready and started: the call ends without it.
fn not_run(code: Code, e: &dyn std::fmt::Display) -> Failure {
    Failure::new(code, format!("{e}; the plugin was not run"))
}

impl From<IntegrityError> for Failure {
    fn from(e: IntegrityError) -> Failure {
        not_run(e.code(), &e)
    }
}

impl From<SandboxError> for Failure {
    fn from(e: SandboxError) -> Failure {
        not_run(e.code(), &e)
    }
}

impl From<SpawnError> for Failure {
    fn from(e: SpawnError) -> Failure {
        match e {
            SpawnError::Sandbox(s) => s.into(),
            other => not_run(other.code(), &other),
        }
    }
}

impl From<ContainerError> for Failure {
    fn from(e: ContainerError) -> Failure {
        not_run(e.code(), &e)
    }
}

/// Its variants say whether the plugin was run themselves.
impl From<LaunchError> for Failure {
    fn from(e: LaunchError) -> Failure {
        match e {
            LaunchError::Integrity(i) => i.into(),
            other => Failure::new(other.code(), other.to_string()),
        }
    }
}
