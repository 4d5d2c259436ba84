from temporalio.api.enums.v1 import EventType
from tests.workflows.test_release import *  # noqa

async def test_dbg(harness):
    started = await harness.start(release("staging"))
    await started.handle.result()
    for e in [e async for e in started.handle.fetch_history_events()]:
        x = ""
        if e.event_type == EventType.EVENT_TYPE_UPSERT_WORKFLOW_SEARCH_ATTRIBUTES:
            x = ",".join(e.upsert_workflow_search_attributes_event_attributes.search_attributes.indexed_fields.keys())
        if e.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED:
            x = e.activity_task_scheduled_event_attributes.activity_type.name
        if e.event_type == EventType.EVENT_TYPE_MARKER_RECORDED:
            a = e.marker_recorded_event_attributes
            x = a.marker_name + " " + ",".join(a.details.keys())
        print("EV", e.event_id, EventType.Name(e.event_type)[11:], x)
