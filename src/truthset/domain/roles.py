"""Roles and reader tiers."""

from __future__ import annotations

from enum import IntEnum, StrEnum


class Role(StrEnum):
    """What a user may do (project-scoped permissions build on these)."""

    ADMIN = "admin"
    MANAGER = "manager"
    ANNOTATOR = "annotator"
    REVIEWER = "reviewer"
    ADJUDICATOR = "adjudicator"
    AUDITOR = "auditor"
    SERVICE = "service"


class Tier(IntEnum):
    """Reader seniority: 1 annotator (not medically trained), 2 clinician reviewer, 3 senior."""

    ANNOTATOR = 1
    REVIEWER = 2
    ADJUDICATOR = 3
