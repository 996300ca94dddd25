"""Every signed document type, by its ``_type``: the one list a new document type joins.

The size cap a type is parsed under sits beside the strict parser
(:data:`~blackhole_sync.documents.canonical.MAX_SIZES`); who signs each type, and how its
freshness is judged, is ARCHITECTURE.md section 3.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from .announcement import Announcement
from .certificate import LockInCertificate
from .downgrade import Downgrade
from .governance import Deprecation, HaltDoc, Proposal, RolloutPlan, ValidatorSet
from .index import Index
from .node_documents import HealthReport, NodeStatusDoc, Vote
from .release import ReleaseManifest
from .root import Root

__all__ = ["DOCUMENT_TYPES"]

#: The model class of each document type, by the ``_type`` its ``signed`` object carries.
DOCUMENT_TYPES: Mapping[str, Any] = {
    cls.TYPE: cls
    for cls in (
        Root,
        Index,
        ReleaseManifest,
        RolloutPlan,
        HaltDoc,
        Proposal,
        Vote,
        HealthReport,
        NodeStatusDoc,
        Announcement,
        ValidatorSet,
        LockInCertificate,
        Downgrade,
        Deprecation,
    )
}
