"""Object metadata and label selectors as users write them (camelCase, Kubernetes shapes)."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field
from pydantic.alias_generators import to_camel

from metallb_bgp.selectors import LabelSelector, Operator, Requirement


class Strict(BaseModel):
    """metallb.io kinds: an unknown field (a typo such as `peerAdress`) is an error, not silently dropped."""

    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="forbid", frozen=True)


class Lenient(BaseModel):
    """Core kinds: we read a slice of them and ignore every field we do not use."""

    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="ignore", frozen=True)


class ObjectMeta(Lenient):
    name: str = Field(min_length=1)
    namespace: str = ""
    labels: dict[str, str] = Field(default_factory=dict)
    annotations: dict[str, str] = Field(default_factory=dict)
    resource_version: str = ""
    uid: str = ""
    generation: int | None = None
    deletion_timestamp: str | None = None


class MatchExpression(Strict):
    key: str = Field(min_length=1)
    operator: Operator
    values: list[str] = Field(default_factory=list)


class LabelSelectorSpec(Strict):
    match_labels: dict[str, str] = Field(default_factory=dict)
    match_expressions: list[MatchExpression] = Field(default_factory=list)

    def to_selector(self) -> LabelSelector:
        return LabelSelector(
            match_labels=frozenset(self.match_labels.items()),
            match_expressions=tuple(
                Requirement(key=e.key, operator=e.operator, values=frozenset(e.values)) for e in self.match_expressions
            ),
        )


class Named:
    """`obj.name` / `obj.namespace` for every kind (core and metallb.io alike)."""

    metadata: ObjectMeta

    @property
    def name(self) -> str:
        return self.metadata.name

    @property
    def namespace(self) -> str:
        return self.metadata.namespace


class KubeObject(Named, Lenient):
    """Fields every object has. Subclasses fix apiVersion/kind and add spec/status."""

    api_version: str
    kind: str
    metadata: ObjectMeta
