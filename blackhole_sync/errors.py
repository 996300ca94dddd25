"""The exception tree of blackhole-sync.

Errors are grouped by who is at fault, as in python-tuf: the remote state (something a
repository, mirror or peer served cannot be trusted), the fetching (a source could not deliver),
the local node (an install could not complete), plugins and configuration. Caller misuse raises
the built-in ``ValueError`` / ``TypeError`` / ``RuntimeError``.

::

    BlackholeSyncError
    ├── SecurityError                   refused for a security reason (command line exit 3)
    │   ├── FormatError                 not strict JSON, or not the document's schema
    │   │   └── UnsafePathError         artifact/member name that could escape its directory
    │   ├── SignatureError              fewer distinct trusted keys signed than the threshold
    │   ├── RollbackError               a version went down, or changed under the same number
    │   │   └── VanishedReleaseError    a trusted release left the index without withdrawal
    │   ├── ExpiredError                past its expiry at the update's reference time
    │   ├── LengthOrHashMismatchError   bytes differ from what the signed metadata says
    │   │   └── LengthExceededError     a stream went past its length cap
    │   ├── WithdrawnReleaseError       the release was withdrawn (yanked) in the index
    │   └── DecryptionError             not a recipient, or the ciphertext does not authenticate
    ├── DownloadError                   a source could not deliver (command line exit 1)
    │   ├── BlobNotFoundError           the source does not hold it
    │   ├── SourceUnavailableError      connection refused, HTTP 5xx, timeouts
    │   └── StallError                  the source sent too slowly and was abandoned
    ├── PatchError                      a delta could not be applied; fall back to a full fetch
    │   ├── PatchFormatError            malformed patch or codec stream
    │   ├── PatchSourceMismatchError    the source is not the one the patch was made from
    │   └── PatchOutputError            output over its bound, or not the expected bytes
    ├── InstallError                    the node could not complete an install or rollback
    │   ├── InsufficientSpaceError      free space below need plus reserve
    │   ├── NodeLockedError             another command holds the node's lock
    │   ├── HealthCheckError            health check failed or timed out (rolled back)
    │   ├── SandboxError                the self-test in the sandbox failed (nothing switched)
    │   ├── MigrationError              a schema or configuration migration failed
    │   ├── IncompatibleReleaseError    no artifact for this node, or its compatibility rules
    │   │                               exclude this node (nothing changed)
    │   └── NoSuchVersionError          asked for a version that is not installed / published
    ├── ConflictError                   the operation conflicts with existing state (exit 1):
    │                                   a release that exists, published twice, an existing node
    ├── PluginError
    │   ├── PluginLoadError             an entry point failed to import or register
    │   └── MissingPluginError          nothing handles this transport / scheme / codec
    └── ConfigurationError              bad node or repository configuration
        └── KeyFileError                a private key file that cannot be used as it is:
                                        accessible by group or others (and not encrypted),
                                        or encrypted and no or a wrong passphrase given
"""

from __future__ import annotations

__all__ = [
    "BlackholeSyncError",
    "BlobNotFoundError",
    "ConfigurationError",
    "ConflictError",
    "DecryptionError",
    "DownloadError",
    "ExpiredError",
    "FormatError",
    "HealthCheckError",
    "IncompatibleReleaseError",
    "InstallError",
    "KeyFileError",
    "InsufficientSpaceError",
    "LengthExceededError",
    "LengthOrHashMismatchError",
    "MigrationError",
    "MissingPluginError",
    "NoSuchVersionError",
    "NodeLockedError",
    "PatchError",
    "PatchFormatError",
    "PatchOutputError",
    "PatchSourceMismatchError",
    "PluginError",
    "PluginLoadError",
    "RollbackError",
    "SandboxError",
    "SecurityError",
    "SignatureError",
    "SourceUnavailableError",
    "StallError",
    "UnsafePathError",
    "VanishedReleaseError",
    "WithdrawnReleaseError",
]


class BlackholeSyncError(Exception):
    """Base of every error this library raises on purpose."""


# -- remote state that cannot be trusted ---------------------------------------------------


class SecurityError(BlackholeSyncError):
    """Input was refused for a security reason. Nothing was persisted or installed."""


class FormatError(SecurityError):
    """A document is not strict JSON, breaks its schema, or exceeds a size cap."""


class UnsafePathError(FormatError):
    """A file name could escape its directory (``..``, absolute, backslash, NUL, links...)."""


class SignatureError(SecurityError):
    """Fewer distinct trusted keys than the role's threshold signed the document."""


class RollbackError(SecurityError):
    """A version went down, or the same version number came back with other bytes."""


class VanishedReleaseError(RollbackError):
    """A release in the trusted index is missing from a newer one without a withdrawal."""


class ExpiredError(SecurityError):
    """A document had expired at the update's reference time."""


class LengthOrHashMismatchError(SecurityError):
    """Received bytes differ in length or sha256 from what signed metadata declares."""


class LengthExceededError(LengthOrHashMismatchError):
    """A stream delivered more bytes than its cap; the transfer was cut."""


class WithdrawnReleaseError(SecurityError):
    """The release was withdrawn in the trusted index and must not be installed."""


class DecryptionError(SecurityError):
    """This node is not a recipient, or the ciphertext failed authentication."""


# -- fetching -------------------------------------------------------------------------------


class DownloadError(BlackholeSyncError):
    """A source failed to deliver. Another source may still succeed."""


class BlobNotFoundError(DownloadError):
    """The source does not hold the requested blob or document."""


class SourceUnavailableError(DownloadError):
    """The source could not be reached or answered with a server error."""


class StallError(DownloadError):
    """The source sent too slowly for too long and was abandoned."""


# -- delta patches --------------------------------------------------------------------------


class PatchError(BlackholeSyncError):
    """A delta patch could not produce the expected output. A full download still can."""


class PatchFormatError(PatchError):
    """The patch (or its compressed streams) is malformed."""


class PatchSourceMismatchError(PatchError):
    """The local source bytes are not the ones the patch was made from."""


class PatchOutputError(PatchError):
    """The patch declares or produced more bytes than allowed, or the wrong bytes."""


# -- the local node -------------------------------------------------------------------------


class InstallError(BlackholeSyncError):
    """An install, rollback or recovery step could not complete; the node is unchanged."""


class InsufficientSpaceError(InstallError):
    """Free disk space is below what the install needs plus the configured reserve."""


class NodeLockedError(InstallError):
    """Another process holds the node's lock."""


class HealthCheckError(InstallError):
    """The new version failed or timed out its health check and was rolled back."""


class SandboxError(InstallError):
    """The release's self-test failed in the sandbox; nothing was switched."""


class MigrationError(InstallError):
    """A schema or configuration migration failed; the old state was kept."""


class IncompatibleReleaseError(InstallError):
    """The release cannot run on this node: it has no artifact for the node's platform and
    architecture, or its compatibility rules (oldest version it updates from, protocol
    versions) exclude the node. Refused before anything is fetched or changed."""


class NoSuchVersionError(InstallError):
    """The requested version is not installed, retained or published."""


class ConflictError(BlackholeSyncError):
    """The operation conflicts with existing state: the thing exists already, or was done."""


# -- plugins and configuration --------------------------------------------------------------


class PluginError(BlackholeSyncError):
    """A plugin misbehaved or is missing."""


class PluginLoadError(PluginError):
    """A plugin's entry point failed to import or register."""


class MissingPluginError(PluginError):
    """No installed plugin handles what was asked (a URL scheme, a codec, ``serve``)."""


class ConfigurationError(BlackholeSyncError):
    """A node or repository configuration value is invalid."""


class KeyFileError(ConfigurationError):
    """A private key file cannot be used as it is: it is accessible by group or others and
    not encrypted (``chmod 600`` fixes it), or it is encrypted and no passphrase, or a wrong
    one, was given."""
