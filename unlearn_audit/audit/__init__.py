"""The audit: pipeline, verdict, privacy-utility trade-off, and the run folder writer."""

from unlearn_audit.audit.pipeline import SCHEMA_VERSION, AuditInputError, run_audit
from unlearn_audit.audit.run import OutputDirError, default_run_dir, execute_audit
from unlearn_audit.audit.verdict import EXIT_CODES

__all__ = ["SCHEMA_VERSION", "AuditInputError", "EXIT_CODES", "OutputDirError", "default_run_dir", "execute_audit",
           "run_audit"]
