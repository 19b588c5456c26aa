"""The acquisition as CASE/UCO JSON-LD (``case.jsonld``), the exchange format lab tools read.

One ``case-investigation:InvestigativeAction`` (performer: the examiner, instrument: this
tool, object: the endpoint, result: the acquired files and the provenance record), one
``case-investigation:ProvenanceRecord`` holding the files, and for each collected artifact a
``uco-observable:File`` with a ``FileFacet`` (name, original path, size, remote times) and a
``ContentDataFacet`` with its MD5, SHA-1 and SHA-256. Node ids are deterministic UUIDv5s
under the case, so the same collection always yields the same document.
"""

from __future__ import annotations

import uuid
from typing import Any

from evidence.records import ArtifactRecord, CaseInfo, DeviceInfo, ToolInfo

CONTEXT = {
    "kb": "urn:cblr-collector:",
    "case-investigation": "https://ontology.caseontology.org/case/investigation/",
    "uco-action": "https://ontology.unifiedcyberontology.org/uco/action/",
    "uco-core": "https://ontology.unifiedcyberontology.org/uco/core/",
    "uco-identity": "https://ontology.unifiedcyberontology.org/uco/identity/",
    "uco-observable": "https://ontology.unifiedcyberontology.org/uco/observable/",
    "uco-tool": "https://ontology.unifiedcyberontology.org/uco/tool/",
    "uco-types": "https://ontology.unifiedcyberontology.org/uco/types/",
    "uco-vocabulary": "https://ontology.unifiedcyberontology.org/uco/vocabulary/",
    "xsd": "http://www.w3.org/2001/XMLSchema#",
}
_HASH_NAMES = (("md5", "MD5"), ("sha1", "SHA1"), ("sha256", "SHA256"))
_REMOTE_TIME_PROPERTIES = {
    "created": "uco-observable:observableCreatedTime",
    "modified": "uco-observable:modifiedTime",
    "accessed": "uco-observable:accessedTime",
}


def _node_id(case_id: str, *parts: str) -> str:
    name = "/".join((case_id, *parts))
    return f"kb:{uuid.uuid5(uuid.NAMESPACE_URL, 'urn:cblr-collector:' + name)}"


def _time(value: str) -> dict[str, str]:
    return {"@type": "xsd:dateTime", "@value": value}


def _file_node(case: CaseInfo, artifact: ArtifactRecord) -> dict[str, Any]:
    leaf = artifact.source.replace("/", "\\").rsplit("\\", 1)[-1]
    file_facet: dict[str, Any] = {
        "@id": _node_id(case.case_id, "file-facet", artifact.artifact_id),
        "@type": "uco-observable:FileFacet",
        "uco-observable:fileName": leaf,
        "uco-observable:filePath": artifact.source,
        "uco-observable:sizeInBytes": {"@type": "xsd:integer", "@value": str(artifact.size)},
    }
    for key, prop in _REMOTE_TIME_PROPERTIES.items():
        if artifact.remote_times.get(key):
            file_facet[prop] = _time(artifact.remote_times[key])
    hashes = artifact.digests.as_dict() if artifact.digests else {}
    content_facet = {
        "@id": _node_id(case.case_id, "content-facet", artifact.artifact_id),
        "@type": "uco-observable:ContentDataFacet",
        "uco-observable:sizeInBytes": {"@type": "xsd:integer", "@value": str(artifact.size)},
        "uco-observable:hash": [
            {
                "@id": _node_id(case.case_id, "hash", artifact.artifact_id, method),
                "@type": "uco-types:Hash",
                "uco-types:hashMethod": {"@type": "uco-vocabulary:HashNameVocab", "@value": label},
                "uco-types:hashValue": {"@type": "xsd:hexBinary", "@value": hashes[method]},
            }
            for method, label in _HASH_NAMES
            if method in hashes
        ],
    }
    return {
        "@id": _node_id(case.case_id, "file", artifact.artifact_id),
        "@type": "uco-observable:File",
        "uco-core:name": artifact.name,
        "uco-core:description": f"{artifact.method} of {artifact.kind}; staged as "
        f"{artifact.staged_path}",
        "uco-core:hasFacet": [file_facet, content_facet],
    }


def build_case_document(
    case: CaseInfo,
    tool: ToolInfo,
    device: DeviceInfo,
    artifacts: list[ArtifactRecord],
    started: str,
    finished: str,
) -> dict[str, Any]:
    case_id = case.case_id
    collected = [artifact for artifact in artifacts if artifact.status == "collected"]
    files = [_file_node(case, artifact) for artifact in collected]
    examiner = {
        "@id": _node_id(case_id, "examiner", case.examiner),
        "@type": "uco-identity:Person",
        "uco-core:name": case.examiner,
    }
    instrument = {
        "@id": _node_id(case_id, "tool", tool.name, tool.version),
        "@type": "uco-tool:Tool",
        "uco-core:name": tool.name,
        "uco-tool:version": tool.version,
        "uco-tool:toolType": "Live Response acquisition",
    }
    endpoint = {
        "@id": _node_id(case_id, "device", device.device_id),
        "@type": "uco-observable:Device",
        "uco-core:name": device.hostname or device.device_id,
        "uco-core:description": f"Carbon Black device {device.device_id}; {device.os}".strip(),
    }
    provenance = {
        "@id": _node_id(case_id, "provenance", device.device_id),
        "@type": "case-investigation:ProvenanceRecord",
        "case-investigation:exhibitNumber": f"{case_id}/{device.device_id}",
        "uco-core:object": [{"@id": node["@id"]} for node in files],
    }
    action = {
        "@id": _node_id(case_id, "acquisition", device.device_id),
        "@type": "case-investigation:InvestigativeAction",
        "uco-core:name": "acquired",
        "uco-core:description": case.purpose,
        "uco-action:startTime": _time(started),
        "uco-action:endTime": _time(finished),
        "uco-action:performer": {"@id": examiner["@id"]},
        "uco-action:instrument": {"@id": instrument["@id"]},
        "uco-action:object": [{"@id": endpoint["@id"]}],
        "uco-action:result": [{"@id": provenance["@id"]}, *({"@id": n["@id"]} for n in files)],
    }
    investigation = {
        "@id": _node_id(case_id, "investigation"),
        "@type": "case-investigation:Investigation",
        "uco-core:name": case_id,
        "case-investigation:focus": case.authority,
        "uco-core:description": case.purpose,
        "uco-core:object": [{"@id": action["@id"]}],
    }
    return {
        "@context": CONTEXT,
        "@graph": [investigation, action, examiner, instrument, endpoint, provenance, *files],
    }
