"""SQLAlchemy models, one module per aggregate. Alembic (``migrations/``) owns the schema."""

from app.models.audit import AuditChainHead, AuditLog
from app.models.base import Base
from app.models.execution import Execution, ExecutionLogChunk
from app.models.idempotency import IdempotencyKey
from app.models.job import Job
from app.models.notification import Notification
from app.models.secret import JobSecret
from app.models.session import WebSession
from app.models.team import Team
from app.models.user import ApiToken, User

__all__ = ["ApiToken", "AuditChainHead", "AuditLog", "Base", "Execution", "ExecutionLogChunk", "IdempotencyKey", "Job",
           "JobSecret", "Notification", "Team", "User", "WebSession"]
