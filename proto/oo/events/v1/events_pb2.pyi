import datetime

from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class Reaction(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    REACTION_UNSPECIFIED: _ClassVar[Reaction]
    REACTION_DONE: _ClassVar[Reaction]
    REACTION_LIKE: _ClassVar[Reaction]
    REACTION_DISMISS: _ClassVar[Reaction]
    REACTION_SNOOZE: _ClassVar[Reaction]
REACTION_UNSPECIFIED: Reaction
REACTION_DONE: Reaction
REACTION_LIKE: Reaction
REACTION_DISMISS: Reaction
REACTION_SNOOZE: Reaction

class Event(_message.Message):
    __slots__ = ("event_id", "user_id", "occurred_at", "utc_offset_minutes", "source", "task_created", "task_updated", "task_completed", "task_deleted", "habit_checked", "calendar_event_observed", "mood_logged", "context_changed", "profile_updated", "preference_set", "consent_changed", "user_deleted", "tip_shown", "tip_reaction")
    EVENT_ID_FIELD_NUMBER: _ClassVar[int]
    USER_ID_FIELD_NUMBER: _ClassVar[int]
    OCCURRED_AT_FIELD_NUMBER: _ClassVar[int]
    UTC_OFFSET_MINUTES_FIELD_NUMBER: _ClassVar[int]
    SOURCE_FIELD_NUMBER: _ClassVar[int]
    TASK_CREATED_FIELD_NUMBER: _ClassVar[int]
    TASK_UPDATED_FIELD_NUMBER: _ClassVar[int]
    TASK_COMPLETED_FIELD_NUMBER: _ClassVar[int]
    TASK_DELETED_FIELD_NUMBER: _ClassVar[int]
    HABIT_CHECKED_FIELD_NUMBER: _ClassVar[int]
    CALENDAR_EVENT_OBSERVED_FIELD_NUMBER: _ClassVar[int]
    MOOD_LOGGED_FIELD_NUMBER: _ClassVar[int]
    CONTEXT_CHANGED_FIELD_NUMBER: _ClassVar[int]
    PROFILE_UPDATED_FIELD_NUMBER: _ClassVar[int]
    PREFERENCE_SET_FIELD_NUMBER: _ClassVar[int]
    CONSENT_CHANGED_FIELD_NUMBER: _ClassVar[int]
    USER_DELETED_FIELD_NUMBER: _ClassVar[int]
    TIP_SHOWN_FIELD_NUMBER: _ClassVar[int]
    TIP_REACTION_FIELD_NUMBER: _ClassVar[int]
    event_id: str
    user_id: str
    occurred_at: _timestamp_pb2.Timestamp
    utc_offset_minutes: int
    source: str
    task_created: TaskCreated
    task_updated: TaskUpdated
    task_completed: TaskCompleted
    task_deleted: TaskDeleted
    habit_checked: HabitChecked
    calendar_event_observed: CalendarEventObserved
    mood_logged: MoodLogged
    context_changed: ContextChanged
    profile_updated: ProfileUpdated
    preference_set: PreferenceSet
    consent_changed: ConsentChanged
    user_deleted: UserDeleted
    tip_shown: TipShown
    tip_reaction: TipReaction
    def __init__(self, event_id: _Optional[str] = ..., user_id: _Optional[str] = ..., occurred_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., utc_offset_minutes: _Optional[int] = ..., source: _Optional[str] = ..., task_created: _Optional[_Union[TaskCreated, _Mapping]] = ..., task_updated: _Optional[_Union[TaskUpdated, _Mapping]] = ..., task_completed: _Optional[_Union[TaskCompleted, _Mapping]] = ..., task_deleted: _Optional[_Union[TaskDeleted, _Mapping]] = ..., habit_checked: _Optional[_Union[HabitChecked, _Mapping]] = ..., calendar_event_observed: _Optional[_Union[CalendarEventObserved, _Mapping]] = ..., mood_logged: _Optional[_Union[MoodLogged, _Mapping]] = ..., context_changed: _Optional[_Union[ContextChanged, _Mapping]] = ..., profile_updated: _Optional[_Union[ProfileUpdated, _Mapping]] = ..., preference_set: _Optional[_Union[PreferenceSet, _Mapping]] = ..., consent_changed: _Optional[_Union[ConsentChanged, _Mapping]] = ..., user_deleted: _Optional[_Union[UserDeleted, _Mapping]] = ..., tip_shown: _Optional[_Union[TipShown, _Mapping]] = ..., tip_reaction: _Optional[_Union[TipReaction, _Mapping]] = ...) -> None: ...

class TaskCreated(_message.Message):
    __slots__ = ("task_id", "project_id", "due_at")
    TASK_ID_FIELD_NUMBER: _ClassVar[int]
    PROJECT_ID_FIELD_NUMBER: _ClassVar[int]
    DUE_AT_FIELD_NUMBER: _ClassVar[int]
    task_id: str
    project_id: str
    due_at: _timestamp_pb2.Timestamp
    def __init__(self, task_id: _Optional[str] = ..., project_id: _Optional[str] = ..., due_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class TaskUpdated(_message.Message):
    __slots__ = ("task_id", "project_id", "due_at")
    TASK_ID_FIELD_NUMBER: _ClassVar[int]
    PROJECT_ID_FIELD_NUMBER: _ClassVar[int]
    DUE_AT_FIELD_NUMBER: _ClassVar[int]
    task_id: str
    project_id: str
    due_at: _timestamp_pb2.Timestamp
    def __init__(self, task_id: _Optional[str] = ..., project_id: _Optional[str] = ..., due_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class TaskCompleted(_message.Message):
    __slots__ = ("task_id", "project_id", "due_at")
    TASK_ID_FIELD_NUMBER: _ClassVar[int]
    PROJECT_ID_FIELD_NUMBER: _ClassVar[int]
    DUE_AT_FIELD_NUMBER: _ClassVar[int]
    task_id: str
    project_id: str
    due_at: _timestamp_pb2.Timestamp
    def __init__(self, task_id: _Optional[str] = ..., project_id: _Optional[str] = ..., due_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class TaskDeleted(_message.Message):
    __slots__ = ("task_id",)
    TASK_ID_FIELD_NUMBER: _ClassVar[int]
    task_id: str
    def __init__(self, task_id: _Optional[str] = ...) -> None: ...

class HabitChecked(_message.Message):
    __slots__ = ("habit_id",)
    HABIT_ID_FIELD_NUMBER: _ClassVar[int]
    habit_id: str
    def __init__(self, habit_id: _Optional[str] = ...) -> None: ...

class CalendarEventObserved(_message.Message):
    __slots__ = ("calendar_event_id", "starts_at", "ends_at")
    CALENDAR_EVENT_ID_FIELD_NUMBER: _ClassVar[int]
    STARTS_AT_FIELD_NUMBER: _ClassVar[int]
    ENDS_AT_FIELD_NUMBER: _ClassVar[int]
    calendar_event_id: str
    starts_at: _timestamp_pb2.Timestamp
    ends_at: _timestamp_pb2.Timestamp
    def __init__(self, calendar_event_id: _Optional[str] = ..., starts_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., ends_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class MoodLogged(_message.Message):
    __slots__ = ("score",)
    SCORE_FIELD_NUMBER: _ClassVar[int]
    score: int
    def __init__(self, score: _Optional[int] = ...) -> None: ...

class ContextChanged(_message.Message):
    __slots__ = ("context", "active")
    CONTEXT_FIELD_NUMBER: _ClassVar[int]
    ACTIVE_FIELD_NUMBER: _ClassVar[int]
    context: str
    active: bool
    def __init__(self, context: _Optional[str] = ..., active: _Optional[bool] = ...) -> None: ...

class ProfileUpdated(_message.Message):
    __slots__ = ("tz",)
    TZ_FIELD_NUMBER: _ClassVar[int]
    tz: str
    def __init__(self, tz: _Optional[str] = ...) -> None: ...

class PreferenceSet(_message.Message):
    __slots__ = ("agent_id", "param", "value_json")
    AGENT_ID_FIELD_NUMBER: _ClassVar[int]
    PARAM_FIELD_NUMBER: _ClassVar[int]
    VALUE_JSON_FIELD_NUMBER: _ClassVar[int]
    agent_id: str
    param: str
    value_json: str
    def __init__(self, agent_id: _Optional[str] = ..., param: _Optional[str] = ..., value_json: _Optional[str] = ...) -> None: ...

class ConsentChanged(_message.Message):
    __slots__ = ("consent", "granted")
    CONSENT_FIELD_NUMBER: _ClassVar[int]
    GRANTED_FIELD_NUMBER: _ClassVar[int]
    consent: str
    granted: bool
    def __init__(self, consent: _Optional[str] = ..., granted: _Optional[bool] = ...) -> None: ...

class UserDeleted(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class TipShown(_message.Message):
    __slots__ = ("tip_id", "agent_ids")
    TIP_ID_FIELD_NUMBER: _ClassVar[int]
    AGENT_IDS_FIELD_NUMBER: _ClassVar[int]
    tip_id: str
    agent_ids: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, tip_id: _Optional[str] = ..., agent_ids: _Optional[_Iterable[str]] = ...) -> None: ...

class TipReaction(_message.Message):
    __slots__ = ("tip_id", "reaction")
    TIP_ID_FIELD_NUMBER: _ClassVar[int]
    REACTION_FIELD_NUMBER: _ClassVar[int]
    tip_id: str
    reaction: Reaction
    def __init__(self, tip_id: _Optional[str] = ..., reaction: _Optional[_Union[Reaction, str]] = ...) -> None: ...
