"""Every exception telemon raises on purpose, under one root.

Bad readings are never exceptions: the ingest stage turns them into values (a
:class:`~monitor.schema.Rejection`, dead-lettered with its reason). What is raised is for what a
person has to act on: a file or setting that cannot be used, a state file that must not be
trusted, or a service that cannot be reached. Each class also derives from the built-in exception
it refines, so ``except ValueError`` and ``except OSError`` keep working::

    TelemonError
    ├── InvalidInput (ValueError)           a file, setting or argument that cannot be used
    │   ├── ConfigError                       settings: FILE:LINE:COL or the environment variable
    │   ├── YamlError                         a YAML file: FILE:LINE:COL per problem
    │   ├── RulesError                        a rules file
    │   ├── CohortsError                      a cohorts file
    │   ├── SigningKeyError                   no usable signing key
    │   ├── ScenarioError                     a simulator scenario
    │   ├── ReplayError                       a replay mapping or log
    │   ├── LabelledInputError                an evaluation input (file, row, column)
    │   └── MissingExtra                      a command's optional dependency: the pip install to run
    ├── UnsafeFileError (OSError)           not a regular file, or over its size bound: unread
    ├── Untrusted                           state that must not be loaded
    │   ├── SnapshotError (ValueError)        corrupt, tampered with, another place or format
    │   │   └── ConversionError                 an older snapshot's River ADWIN that cannot be read
    │   └── RefusedClassError (UnpicklingError)  a pickle naming a class off the allowlist
    ├── RegistryError                       a registry request that cannot be honoured
    │   └── ArtifactError                     a version that must not be loaded
    │       ├── UnknownVersionError             no such version
    │       └── BundleError                     a version bundle that must not be imported
    └── Unavailable (RuntimeError)          a service did not answer or refused
        ├── KafkaUnavailable                  the Kafka cluster
        ├── HistoryUnavailable                the readings topic lacks a retrain's range (retention)
        │   └── HistoryTimeout                  reading it outlasted its time budget
        ├── TransactionsFailed                exactly_once: the transactional producer, for good
        ├── BrokerError                       the embedded broker did not start
        ├── MqttUnavailable                   the MQTT broker
        └── SinkUnavailable                   Alertmanager (do not commit past the alerts)
            └── SinkRejected                    it refused the request itself (4xx)

The command line maps :class:`InvalidInput` to exit code 2 and :class:`Unavailable` to 1.
"""

from __future__ import annotations

import pickle


class TelemonError(Exception):
    """The root: everything telemon raises on purpose."""


class InvalidInput(TelemonError, ValueError):
    """A file, setting or argument that cannot be used; the message says where and why."""


class ConfigError(InvalidInput):
    """Settings that cannot be used: one line per problem, naming the file, line and column (or the
    environment variable) it comes from."""


class YamlError(InvalidInput):
    """A YAML file that cannot be read: one ``FILE:LINE:COLUMN: ...`` line per problem."""


class RulesError(InvalidInput):
    """A rules file that cannot be used; one ``FILE:LINE:COLUMN: path: problem`` line per problem."""


class CohortsError(InvalidInput):
    """A cohorts file that cannot be used (or that gives a label the channels' labels give too);
    the message names the file and the problem."""


class SigningKeyError(InvalidInput):
    """No usable signing key: missing, too short, or unreadable."""


class ScenarioError(InvalidInput):
    """A scenario file that cannot be used; the message names the file and the offending key."""


class ReplayError(InvalidInput):
    """A mapping or log that cannot be replayed; the message names the file (and line)."""


class LabelledInputError(InvalidInput):
    """A labelled input that cannot be read; the message names the file, row and column."""


class MissingExtra(InvalidInput):
    """A command whose optional dependency is not installed; the message names the extra to install
    (``pip install 'telemon[mqtt]'``)."""


class UnsafeFileError(TelemonError, OSError):
    """A path that is not a regular file, or a file over its size bound: refused unread."""


class Untrusted(TelemonError):
    """State that must not be loaded."""


class SnapshotError(Untrusted, ValueError):
    """A snapshot that cannot be used: corrupt, tampered with, or from an unknown format."""


class ConversionError(SnapshotError):
    """A River ADWIN of an older snapshot whose state cannot be read into the slab rows."""


class RefusedClassError(Untrusted, pickle.UnpicklingError):
    """A pickle named a global that is not on the allowlist."""

    def __init__(self, module: str, name: str) -> None:
        super().__init__(f"refusing to unpickle {module}.{name}: not an allowed model class")
        self.module = module
        self.name = name


class RegistryError(TelemonError):
    """A registry request that cannot be honoured; the message says why and what to do."""


class ArtifactError(RegistryError):
    """A version that must not be loaded: missing, unsigned, tampered with, or unsafe."""


class UnknownVersionError(ArtifactError):
    """No such version is registered."""


class BundleError(ArtifactError):
    """A version bundle that must not be imported: unreadable, truncated, tampered with, of an
    unknown format, or signed by a key that is not trusted."""


class Unavailable(TelemonError, RuntimeError):
    """A service did not answer, or refused an operation."""


class KafkaUnavailable(Unavailable):
    """The broker could not be reached or refused an operation."""


class HistoryUnavailable(Unavailable):
    """The readings topic cannot give a pair's past readings: retention took them, or the read failed."""


class HistoryTimeout(HistoryUnavailable):
    """Reading a pair's past readings took longer than its time budget."""


class TransactionsFailed(Unavailable):
    """exactly_once: the transactional producer failed for good (fenced by a newer instance)."""


class BrokerError(Unavailable):
    """The embedded broker did not start (or its package has no broker binary)."""


class MqttUnavailable(Unavailable):
    """The MQTT broker could not be reached or refused the connection or subscription."""


class SinkUnavailable(Unavailable):
    """The sink did not accept the alerts; they are not delivered (do not commit past them)."""


class SinkRejected(SinkUnavailable):
    """The sink refused the request itself (a 4xx answer): retrying the same request cannot help."""
