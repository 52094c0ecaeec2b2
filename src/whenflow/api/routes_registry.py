"""Registry routes: push, publish, list and read pipelines and `kind: Task` definitions."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Request, Response

from whenflow.api.auth import require
from whenflow.api.bodies import text_body
from whenflow.api.models import ERROR_RESPONSES, YAML_BODY
from whenflow.domain.auth import Role
from whenflow.domain.registry import DefinitionKind
from whenflow.services.registry import RegistryService
from whenflow.services.views import registry_version_view

router = APIRouter(prefix="/api/v1", responses=ERROR_RESPONSES)
VIEW = [Depends(require(Role.VIEWER))]
ADMIN = [Depends(require(Role.ADMIN))]
KINDS = {"pipelines": DefinitionKind.PIPELINE, "tasks": DefinitionKind.TASK}


def _registry(request: Request) -> RegistryService:
    registry: RegistryService = request.app.state.registry
    return registry


def _add_routes(plural: str, kind: DefinitionKind) -> None:
    label = "pipeline" if kind is DefinitionKind.PIPELINE else "task definition"

    async def push(request: Request, response: Response, publish: bool = False) -> dict[str, Any]:
        entry = await _registry(request).push(await text_body(request), publish=publish, kind=kind)
        response.status_code = 201
        return registry_version_view(entry)

    async def publish_version(request: Request, name: str, version: str) -> dict[str, Any]:
        return registry_version_view(await _registry(request).publish(kind, name, version))

    async def list_all(request: Request) -> dict[str, Any]:
        return {"items": [registry_version_view(e) for e in await _registry(request).list(kind)]}

    async def versions(request: Request, name: str) -> dict[str, Any]:
        found = await _registry(request).versions(kind, name)
        return {"name": name, "versions": [registry_version_view(e) for e in found]}

    async def one_version(request: Request, name: str, version: str) -> dict[str, Any]:
        entry, text = await _registry(request).get(kind, name, version)
        return {**registry_version_view(entry), "yaml": text}

    async def delete_draft(request: Request, name: str, version: str) -> Response:
        await _registry(request).delete_draft(kind, name, version)
        return Response(status_code=204)

    base = f"/{plural}"
    router.add_api_route(
        base, push, methods=["POST"], status_code=201, dependencies=ADMIN,
        summary=f"Push a {label} (YAML body); ?publish=true publishes it at once",
        openapi_extra=YAML_BODY, name=f"push_{plural}",
    )  # fmt: skip
    router.add_api_route(
        base + "/{name}/versions/{version}/publish", publish_version, methods=["POST"],
        dependencies=ADMIN, summary=f"Publish a draft {label} version", name=f"publish_{plural}",
    )  # fmt: skip
    router.add_api_route(
        base, list_all, methods=["GET"], dependencies=VIEW, name=f"list_{plural}",
        summary=f"Every {label}: its latest published version, else its latest draft",
    )  # fmt: skip
    router.add_api_route(
        base + "/{name}", versions, methods=["GET"], dependencies=VIEW, name=f"{plural}_versions",
        summary=f"The versions of one {label}, newest first",
    )  # fmt: skip
    router.add_api_route(
        base + "/{name}/versions/{version}", one_version, methods=["GET"], dependencies=VIEW,
        summary=f"One {label} version with its YAML", name=f"get_{plural}_version",
    )  # fmt: skip
    router.add_api_route(
        base + "/{name}/versions/{version}", delete_draft, methods=["DELETE"],
        status_code=204, dependencies=ADMIN, summary=f"Delete a draft {label} version",
        name=f"delete_{plural}_draft",
    )  # fmt: skip


for _plural, _kind in KINDS.items():
    _add_routes(_plural, _kind)
