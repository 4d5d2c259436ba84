"""Kubernetes' protobuf request bodies (`application/vnd.kubernetes.protobuf`), turned into
the JSON dict a JSON body of the same object would have been.

kubectl and client-go send built-in kinds as protobuf: the magic `k8s\\x00`, then a
`runtime.Unknown` whose typeMeta names the kind and whose `raw` is the serialized object.
The classes come from the .proto files of k8s.io/api and k8s.io/apimachinery (generated/,
made by generate.sh); nothing here reads the wire format itself.

Go's JSON and protobuf encodings of one object differ, and the JSON is what the stand-in
keeps, so the conversion follows Go's JSON tags (generated/gofields.py): a pointer field is
present or absent, a value field always travels in protobuf and is left out of the JSON when
zero only if it is `omitempty`, an `inline` field's members belong to the enclosing object;
and the types with their own JSON form (Quantity, IntOrString, Time, MicroTime, FieldsV1,
RawExtension) become what their MarshalJSON writes.
"""

from __future__ import annotations

import base64
import datetime
import json
from typing import Any, Callable

from google.protobuf import descriptor_pool, message_factory
from google.protobuf.descriptor import Descriptor, FieldDescriptor
from google.protobuf.message import DecodeError, Message

# Importing the generated modules registers their messages in the default descriptor pool.
from sandbox.kubernetes.protobuf.generated.gofields import FIELDS
from sandbox.kubernetes.protobuf.generated.k8s_io.api.admissionregistration.v1 import generated_pb2 as _adm_v1  # noqa: F401
from sandbox.kubernetes.protobuf.generated.k8s_io.api.apps.v1 import generated_pb2 as _apps_v1  # noqa: F401
from sandbox.kubernetes.protobuf.generated.k8s_io.api.autoscaling.v1 import generated_pb2 as _as_v1  # noqa: F401
from sandbox.kubernetes.protobuf.generated.k8s_io.api.autoscaling.v2 import generated_pb2 as _as_v2  # noqa: F401
from sandbox.kubernetes.protobuf.generated.k8s_io.api.batch.v1 import generated_pb2 as _batch_v1  # noqa: F401
from sandbox.kubernetes.protobuf.generated.k8s_io.api.core.v1 import generated_pb2 as _core_v1  # noqa: F401
from sandbox.kubernetes.protobuf.generated.k8s_io.api.policy.v1 import generated_pb2 as _policy_v1  # noqa: F401
from sandbox.kubernetes.protobuf.generated.k8s_io.api.rbac.v1 import generated_pb2 as _rbac_v1  # noqa: F401
from sandbox.kubernetes.protobuf.generated.k8s_io.apimachinery.pkg.runtime import generated_pb2 as runtime_pb2

MEDIA_TYPE = "application/vnd.kubernetes.protobuf"
MAGIC = b"k8s\x00"
META = "k8s.io.apimachinery.pkg.apis.meta.v1"
_RESOURCE = "k8s.io.apimachinery.pkg.api.resource"


class ProtobufError(Exception):
    """A body that cannot be read; answered as a Status with this code and reason."""

    def __init__(self, code: int, reason: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.reason = reason
        self.message = message


def proto_package(api_version: str) -> str | None:
    """The protobuf package of a group/version: core `v1` is k8s.io.api.core.v1,
    `rbac.authorization.k8s.io/v1` k8s.io.api.rbac.v1, `meta.k8s.io/v1` apimachinery's."""
    group, _, version = api_version.rpartition("/")
    if not version:
        return None
    if group == "meta.k8s.io":
        return f"{META.rsplit('.', 1)[0]}.{version}"
    if group and "." in group and not group.endswith(".k8s.io"):
        return None  # a custom resource's group (networking.istio.io): JSON only
    return f"k8s.io.api.{group.split('.')[0] if group else 'core'}.{version}"


# metav1.AddToGroupVersion registers these in every group version: client-go sends, say,
# the DeleteOptions of an apps/v1 delete as apps/v1 DeleteOptions.
META_KINDS = {"DeleteOptions", "CreateOptions", "UpdateOptions", "PatchOptions", "GetOptions",
              "ListOptions"}


def message_class(api_version: str, kind: str) -> type[Message] | None:
    package = proto_package(api_version)
    if package is None or not kind:
        return None
    if kind in META_KINDS:
        package = f"{META.rsplit('.', 1)[0]}.{api_version.rpartition('/')[2]}"
    try:
        descriptor = descriptor_pool.Default().FindMessageTypeByName(f"{package}.{kind}")
    except KeyError:
        return None
    return message_factory.GetMessageClass(descriptor)


def decode(body: bytes) -> dict[str, Any]:
    """The object in a protobuf request body, as Kubernetes JSON (with apiVersion and kind)."""
    if not body.startswith(MAGIC):
        raise ProtobufError(400, "BadRequest", "the protobuf body does not start with the "
                            "Kubernetes magic number 'k8s\\x00'")
    envelope = runtime_pb2.Unknown()
    try:
        envelope.ParseFromString(body[len(MAGIC):])
    except DecodeError as e:
        raise ProtobufError(400, "BadRequest",
                            f"the protobuf body is not a runtime.Unknown envelope: {e}") from None
    api_version, kind = envelope.typeMeta.apiVersion, envelope.typeMeta.kind
    if envelope.contentEncoding or envelope.contentType not in ("", MEDIA_TYPE):
        raise ProtobufError(415, "UnsupportedMediaType", "unsupported protobuf envelope: "
                            f"contentType {envelope.contentType!r}, contentEncoding "
                            f"{envelope.contentEncoding!r}")
    cls = message_class(api_version, kind)
    if cls is None:
        raise ProtobufError(415, "UnsupportedMediaType",
                            f"no protobuf encoding is known for kind {kind!r} in "
                            f"{api_version!r}: send it as application/json")
    obj = cls()
    try:
        obj.ParseFromString(envelope.raw)
    except DecodeError as e:
        raise ProtobufError(400, "BadRequest",
                            f"the protobuf body is not a valid {api_version} {kind}: {e}") from None
    return {"kind": kind, "apiVersion": api_version, **to_json(obj)}


def to_json(msg: Message) -> Any:
    """What Go's encoding/json writes for the object `msg` was serialized from."""
    descriptor: Descriptor = msg.DESCRIPTOR
    special = SPECIAL.get(descriptor.full_name)
    if special is not None:
        return special(msg)
    tags = FIELDS.get(descriptor.full_name, {})
    out: dict[str, Any] = {}
    for field in descriptor.fields:
        flags = tags.get(field.name)
        value = getattr(msg, field.name)
        if _is_list_like(field):
            if len(value):
                out[field.name] = _collection(field, value)
            elif flags is not None and not {"o", "z"} & set(flags):
                out[field.name] = None  # a nil slice or map without omitempty
            continue
        present = msg.HasField(field.name)
        if (flags is None or "p" in flags) and not present:
            if flags is not None and "o" not in flags:
                out[field.name] = None  # a nil pointer without omitempty
            continue
        if flags and "p" not in flags and _omitted_zero(field, value, flags):
            continue
        converted = _value(field, value)
        if flags and "i" in flags and isinstance(converted, dict):
            out.update(converted)
        else:
            out[field.name] = converted
    return out


def _is_list_like(field: FieldDescriptor) -> bool:
    """Repeated fields, maps and bytes: Go slices and maps, nil when empty."""
    return field.is_repeated or field.type == FieldDescriptor.TYPE_BYTES


def _omitted_zero(field: FieldDescriptor, value: Any, flags: str) -> bool:
    if field.type == FieldDescriptor.TYPE_MESSAGE:
        return "z" in flags and _is_zero(value)  # omitempty never drops a struct in Go
    return ("o" in flags or "z" in flags) and not value


def _is_zero(msg: Message) -> bool:
    return all(_is_zero(v) if f.type == FieldDescriptor.TYPE_MESSAGE and
               not f.is_repeated else not v
               for f, v in msg.ListFields())


def _value(field: FieldDescriptor, value: Any) -> Any:
    if field.type == FieldDescriptor.TYPE_MESSAGE:
        return to_json(value)
    if field.type == FieldDescriptor.TYPE_BYTES:
        return base64.b64encode(value).decode()
    return value


def _collection(field: FieldDescriptor, value: Any) -> Any:
    if not field.is_repeated:
        return _value(field, value)  # bytes
    if field.message_type is not None and field.message_type.GetOptions().map_entry:
        item = field.message_type.fields_by_name["value"]
        return {key: _value(item, v) for key, v in value.items()}
    return [_value(field, v) for v in value]


def _utc(seconds: float) -> datetime.datetime:
    return datetime.datetime.fromtimestamp(seconds, datetime.timezone.utc)


def _time(msg: Message) -> str | None:
    if not msg.ListFields():
        return None  # the zero time.Time, which Go writes as null
    return _utc(msg.seconds).strftime("%Y-%m-%dT%H:%M:%SZ")  # metav1.Time drops the nanos


def _micro_time(msg: Message) -> str | None:
    if not msg.ListFields():
        return None
    micros = msg.nanos // 1000
    return (_utc(msg.seconds) + datetime.timedelta(microseconds=micros)) \
        .strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _raw_json(raw: bytes, what: str) -> Any:
    if not raw:
        return None
    try:
        return json.loads(raw)
    except ValueError:
        raise ProtobufError(400, "BadRequest", f"{what} does not hold JSON") from None


SPECIAL: dict[str, Callable[[Any], Any]] = {
    f"{_RESOURCE}.Quantity": lambda m: m.string or "0",
    f"{_RESOURCE}.QuantityValue": lambda m: m.string or "0",
    "k8s.io.apimachinery.pkg.util.intstr.IntOrString":
        lambda m: m.strVal if m.type == 1 else m.intVal,
    f"{META}.Time": _time,
    f"{META}.MicroTime": _micro_time,
    f"{META}.Verbs": lambda m: list(m.items),
    f"{META}.FieldsV1": lambda m: _raw_json(m.Raw, "a FieldsV1 (managedFields)"),
    "k8s.io.apimachinery.pkg.runtime.RawExtension":
        lambda m: _raw_json(m.raw, "a RawExtension"),
}
