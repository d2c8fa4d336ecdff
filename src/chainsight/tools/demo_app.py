"""The support assistant behind ``chainsight demo``.

It is written the way we would like an application to use chainsight: the retrieval, rerank,
prompt, model and validation steps are ordinary functions, each declared once as a stage; the
request wraps one ticket; failures are the real clients' exceptions, and chainsight works out
the fault domain. The model is called with the real ``openai`` SDK (``AsyncOpenAI``, pointed at
the demo's simulated provider on 127.0.0.1, :mod:`chainsight.tools.demo_sim`), the knowledge
base is searched with the real ``qdrant-client`` in its embedded mode (``":memory:"``, no
server), and ``chainsight.instrument("openai", "qdrant")`` (called by the harness) records the
SDK calls' tokens, cost and hits on the stages below, with no ``record_response`` by hand.

Faults are injected by :class:`FaultPlan`, consulted by the simulated provider, by the vector
store (which sends the faulty share of queries to an address where nothing listens) and by the
prompt builder (the application bug). ``time_scale`` makes every simulated delay shorter, so a
test can run a minute of traffic in a few seconds.
"""

from __future__ import annotations

import hashlib
import json
import math
import random
import re
import socket
from collections import Counter
from collections.abc import AsyncIterator, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final, cast

import openai
from openai.types.chat import ChatCompletionMessageParam
from qdrant_client import AsyncQdrantClient, models
from qdrant_client.http.exceptions import ResponseHandlingException

import chainsight
from chainsight import _names as n
from chainsight.tools.demo_sim import FAULTS, MODEL, Clock, FaultPlan

__all__ = [
    "FAULTS",
    "KNOWLEDGE_BASE",
    "MODEL",
    "Answer",
    "BM25Index",
    "Clock",
    "Document",
    "FaultPlan",
    "SupportAssistant",
    "Ticket",
    "VectorStore",
    "make_ticket",
]

PROVIDER: Final = "simai"
VECTOR_SYSTEM: Final = "qdrant"
COLLECTION: Final = "kb"

# --- the knowledge base -------------------------------------------------------------------------


@dataclass(frozen=True)
class Document:
    """One help-centre article."""

    id: str
    title: str
    text: str


_ARTICLES: Final = (
    ("Reset your password", "Open Settings, choose Security and click Reset password. A link "
     "valid for 30 minutes is sent to your email address."),
    ("Enable two-factor authentication", "Two-factor authentication adds a code from an "
     "authenticator app at login. Turn it on under Settings, Security, Two-factor."),
    ("Change the billing plan", "Owners can upgrade or downgrade the plan under Billing. "
     "Upgrades apply at once; downgrades apply at the end of the billing period."),
    ("Download invoices", "Invoices are available as PDF under Billing, Invoices. Each invoice "
     "lists the plan, seats and taxes for the period."),
    ("Refund policy", "Annual plans can be refunded within 14 days of purchase. Monthly plans "
     "are not refunded but can be cancelled at any time."),
    ("Add team members", "Invite colleagues by email under Team. Each accepted invitation uses "
     "one seat of your plan."),
    ("Remove a team member", "Owners can remove members under Team. Their content stays in the "
     "workspace and the seat is freed immediately."),
    ("Single sign-on with SAML", "Enterprise plans support SAML single sign-on with Okta, Azure "
     "AD and Google Workspace. Configure it under Security, SSO."),
    ("Export your data", "Export all projects as a ZIP archive of JSON files under Settings, "
     "Data export. Large exports are emailed when ready."),
    ("Delete your account", "Deleting the account removes all projects after a 30 day grace "
     "period. Owners must transfer or delete the workspace first."),
    ("API keys", "Create API keys under Developer settings. Keys inherit the permissions of the "
     "user who created them and can be revoked at any time."),
    ("API rate limits", "The API allows 600 requests per minute per workspace. Responses with "
     "status 429 include a Retry-After header."),
    ("Webhooks", "Webhooks post JSON events to your endpoint. Failed deliveries are retried "
     "with exponential backoff for 24 hours."),
    ("Mobile app login", "The mobile app supports password, magic link and SSO login. Update "
     "the app if login fails after a password reset."),
    ("Offline mode", "The desktop app keeps recent projects available offline and syncs "
     "changes when the connection returns."),
    ("Sync conflicts", "When two people edit the same item offline, both versions are kept and "
     "the newer one is shown first."),
    ("Notification settings", "Choose email, push or no notifications per project under "
     "Settings, Notifications."),
    ("Integrations with Slack", "Connect Slack under Integrations to receive project updates "
     "in a channel and create tasks from messages."),
    ("Calendar integration", "Google and Outlook calendars sync due dates both ways. Connect "
     "them under Integrations, Calendar."),
    ("Data residency", "Enterprise workspaces can keep data in the EU or US region. The region "
     "is chosen when the workspace is created."),
    ("Security and compliance", "We are SOC 2 Type II audited; data is encrypted at rest with "
     "AES-256 and in transit with TLS 1.2 or later."),
    ("Service status", "Live service status and incident history are on the status page. "
     "Subscribe there for email alerts."),
    ("Contact support", "Paid plans get email support within one business day; Enterprise "
     "plans get a dedicated channel and a 4 hour response target."),
    ("Accessibility", "The web app supports screen readers, keyboard navigation and high "
     "contrast themes."),
)  # fmt: skip

KNOWLEDGE_BASE: Final = tuple(
    Document(f"kb-{i:02d}", title, text) for i, (title, text) in enumerate(_ARTICLES, start=1)
)

_WORD: Final = re.compile(r"[a-z0-9]+")
_STOP: Final = frozenset(
    ("a", "an", "and", "are", "as", "at", "be", "by", "can", "do", "for", "from", "how", "i",
     "in", "is", "it", "my", "of", "on", "or", "the", "to", "what", "when", "with", "you", "your")
)  # fmt: skip


def tokenize(text: str) -> list[str]:
    """Lower-case word tokens without stop words."""
    return [w for w in _WORD.findall(text.lower()) if w not in _STOP]


def embed(text: str, dimensions: int = 96) -> list[float]:
    """A deterministic hashed bag-of-words embedding, unit length (no model download needed)."""
    vector = [0.0] * dimensions
    for token in tokenize(text):
        digest = hashlib.blake2b(token.encode(), digest_size=4).digest()
        index = int.from_bytes(digest[:2], "big") % dimensions
        vector[index] += 1.0 if digest[2] & 1 else -1.0
    norm = math.sqrt(sum(v * v for v in vector)) or 1.0
    return [v / norm for v in vector]


# --- the vector store and the BM25 fallback -----------------------------------------------------


class VectorStore:
    """The knowledge base in Qdrant, embedded (qdrant-client's local mode: no server to run).

    :meth:`client` is the client a query goes through. While ``vector-store-down`` is injected,
    the affected share of queries goes through a second client whose address refuses
    connections, so the app sees what it would see of a Qdrant that is down: qdrant-client's own
    ``ResponseHandlingException`` around httpx's ``ConnectError``.
    """

    def __init__(self, docs: Iterable[Document], faults: FaultPlan, clock: Clock) -> None:
        self.docs = dict(enumerate(docs, start=1))
        self._faults = faults
        self._embedded = AsyncQdrantClient(location=":memory:")
        # Bound but never listening: connections to it are refused, and no other process can
        # take the port while the demo runs.
        self._refusing = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._refusing.bind(("127.0.0.1", 0))
        port = self._refusing.getsockname()[1]
        self._down = AsyncQdrantClient(
            url=f"http://127.0.0.1:{port}",
            timeout=max(1, round(clock.real(2.0))),
            check_compatibility=False,  # it would ask the (absent) server for its version
        )

    async def load(self) -> None:
        """Create the collection and index every document (cosine distance)."""
        size = len(embed(""))
        await self._embedded.create_collection(
            COLLECTION,
            vectors_config=models.VectorParams(size=size, distance=models.Distance.COSINE),
        )
        points = [
            models.PointStruct(id=i, vector=embed(f"{d.title} {d.text}"), payload={"doc": d.id})
            for i, d in self.docs.items()
        ]
        await self._embedded.upsert(COLLECTION, points=points)

    def client(self) -> AsyncQdrantClient:
        """The client for the next query: the embedded store, or (fault) one that is down."""
        return self._down if self._faults.hits("vector-store-down") else self._embedded

    async def close(self) -> None:
        """Close both clients and free the refusing port."""
        await self._embedded.close()
        await self._down.close()
        self._refusing.close()


class BM25Index:
    """Okapi BM25 over the same documents: the keyword search we fall back on."""

    def __init__(self, docs: Iterable[Document], k1: float = 1.5, b: float = 0.75) -> None:
        self._docs = list(docs)
        self._terms = [Counter(tokenize(f"{d.title} {d.text}")) for d in self._docs]
        self._lengths = [sum(t.values()) for t in self._terms]
        self._avg = sum(self._lengths) / max(len(self._lengths), 1)
        frequency: Counter[str] = Counter()
        for terms in self._terms:
            frequency.update(terms.keys())
        total = len(self._docs)
        self._idf = {t: math.log(1 + (total - f + 0.5) / (f + 0.5)) for t, f in frequency.items()}
        self._k1, self._b = k1, b

    def search(self, query: str, k: int) -> list[tuple[Document, float]]:
        """The ``k`` best-scoring documents for ``query``, best first (score > 0 only)."""
        words = tokenize(query)
        scored = []
        for doc, terms, length in zip(self._docs, self._terms, self._lengths, strict=True):
            score = 0.0
            for word in words:
                tf = terms.get(word, 0)
                if tf:
                    norm = tf + self._k1 * (1 - self._b + self._b * length / self._avg)
                    score += self._idf[word] * tf * (self._k1 + 1) / norm
            if score > 0:
                scored.append((doc, score))
        scored.sort(key=lambda item: item[1], reverse=True)
        return scored[:k]


def rerank_scores(query: str, candidates: Sequence[tuple[Document, float]]) -> list[float]:
    """A small local cross-scorer: query-term coverage of title and text, in [0, 1]."""
    words = set(tokenize(query))
    scores = []
    for doc, _ in candidates:
        title, text = set(tokenize(doc.title)), set(tokenize(doc.text))
        coverage = len(words & (title | text)) / max(len(words), 1)
        scores.append(min(1.0, 0.7 * coverage + 0.3 * len(words & title) / max(len(title), 1)))
    return scores


# --- the application --------------------------------------------------------------------------


@dataclass(frozen=True)
class Ticket:
    """A customer's question."""

    id: str
    tenant: str
    question: str
    customer: Mapping[str, str]


@dataclass(frozen=True)
class Answer:
    """What the assistant sends back; ``handoff`` means a human takes over."""

    text: str
    citations: tuple[str, ...]
    degraded: bool = False
    handoff: bool = False


_QUESTIONS: Final = (
    "How do I reset my password?",
    "Can I get a refund for my annual plan?",
    "Where can I download last month's invoice?",
    "How do I set up SAML single sign-on with Okta?",
    "What are the API rate limits?",
    "How do I add a colleague to my team?",
    "Is my data encrypted at rest?",
    "How do I export all my projects?",
    "Why does the mobile app fail to log in after a password reset?",
    "How are webhook deliveries retried?",
    "Can we keep our data in the EU region?",
    "How do I connect Slack?",
    "What happens to content when I remove a team member?",
    "How do I turn on two-factor authentication?",
)
_TENANTS: Final = ("acme", "globex", "initech", "umbrella")
_PLANS: Final = ("free", "team", "enterprise")


def make_ticket(rng: random.Random, number: int) -> Ticket:
    """A random ticket; one in three customers has no ``plan`` on record."""
    customer = {"name": rng.choice(("Ada", "Grace", "Linus", "Margaret", "Ken"))}
    if rng.random() < 2 / 3:
        customer["plan"] = rng.choice(_PLANS)
    return Ticket(f"T-{number:05d}", rng.choice(_TENANTS), rng.choice(_QUESTIONS), customer)


_SYSTEM_PROMPT: Final = (
    "You are the support assistant. Answer only from the articles given, in JSON: "
    '{"answer": "...", "citations": ["kb-.."]}.'
)
_TEMPLATES: Final[Mapping[str, str]] = {
    "7": "Customer {name} asks: {question}\n\nArticles:\n{articles}",
    # Version 8 personalises by plan, but not every customer record has one: the app bug.
    "8": "Customer {name} on the {plan} plan asks: {question}\n\nArticles:\n{articles}",
}


class InvalidAnswer(ValueError):
    """The model's output is not the JSON answer we asked for."""


def parse_answer(text: str, allowed: Iterable[str]) -> tuple[str, tuple[str, ...]]:
    """Parse and check the model's JSON answer; raise :class:`InvalidAnswer` with the reason."""
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise InvalidAnswer(f"not JSON ({exc.msg} at char {exc.pos})") from None
    if not isinstance(data, dict):
        raise InvalidAnswer(f"expected a JSON object, got {type(data).__name__}")
    answer = data.get("answer")
    if not isinstance(answer, str) or not answer.strip():
        raise InvalidAnswer("missing field 'answer'")
    citations = data.get("citations", [])
    if not isinstance(citations, list) or not all(isinstance(c, str) for c in citations):
        raise InvalidAnswer("'citations' must be a list of article ids")
    unknown = sorted(set(citations) - set(allowed))
    if unknown:
        raise InvalidAnswer(f"cites articles not in the context: {', '.join(unknown)}")
    return answer, tuple(citations)


class SupportAssistant:
    """Answers support tickets: retrieve, rerank, build the prompt, stream the model, validate.

    Each step is a chainsight stage; :meth:`answer` is one request.
    """

    top_k: Final = 8
    context_k: Final = 3

    def __init__(self, faults: FaultPlan, clock: Clock, provider_url: str) -> None:
        """The clients; :meth:`open` loads the knowledge base, :meth:`close` closes them."""
        self.faults = faults
        self.vectors = VectorStore(KNOWLEDGE_BASE, faults, clock)
        self.keywords = BM25Index(KNOWLEDGE_BASE)
        # The real OpenAI SDK, pointed at the simulated provider. No retries: the demo's fault
        # rate is the share of calls that fail (with the SDK's retries, 50% would show as 25%).
        self.llm = openai.AsyncOpenAI(
            api_key="sk-demo",
            base_url=provider_url,
            max_retries=0,
            timeout=clock.client_timeout(),
            # Loopback only: a proxy from the environment must not carry the demo's calls.
            http_client=openai.DefaultAsyncHttpxClient(trust_env=False),
        )

    async def open(self) -> None:
        """Index the knowledge base in the embedded Qdrant."""
        await self.vectors.load()

    async def close(self) -> None:
        """Close the OpenAI and Qdrant clients."""
        await self.llm.close()
        await self.vectors.close()

    async def answer(self, ticket: Ticket) -> Answer:
        """Answer one ticket. Raises what the chain raised; chainsight has recorded where."""
        async with chainsight.request("answer_ticket", tenant=ticket.tenant, feature="support"):
            candidates, fell_back = await self.search_kb(ticket.question)
            context = self.rerank(ticket.question, candidates)
            messages = self.build_prompt(ticket, context)
            text = "".join([chunk async for chunk in self.generate(messages)])
            checked = self.validate(text, [doc.id for doc in context])
            if checked is None:
                # The customer still hears from us; chainsight records the request as failed,
                # with the model (the failed validation) as the fault.
                return Answer("A support engineer will get back to you shortly.", (), handoff=True)
            reply, citations = checked
            return Answer(reply, citations, degraded=fell_back)

    @chainsight.traced_stage(
        "retrieval", name="search_kb", system=VECTOR_SYSTEM, collection=COLLECTION, top_k=top_k
    )
    async def search_kb(self, query: str) -> tuple[list[tuple[Document, float]], bool]:
        """Semantic search; while the vector store is down, keyword search keeps us answering.

        Returns the hits and whether they came from the fallback.
        """
        try:
            # chainsight.instrument("qdrant") records the points returned on this stage.
            found = await self.vectors.client().query_points(
                COLLECTION, query=embed(query), limit=self.top_k
            )
        except ResponseHandlingException:
            # Qdrant is unreachable. Inside the except block, so chainsight records what
            # failed (the vector store) while the request goes on, degraded.
            chainsight.current_stage().fallback(to="bm25", reason="vector store unavailable")
            hits = self.keyword_search(query)
            chainsight.current_stage().record_documents(
                count=len(hits), scores=[round(s, 4) for _, s in hits], ids=[d.id for d, _ in hits]
            )
            return hits, True
        return [(self.vectors.docs[int(p.id)], p.score) for p in found.points], False

    @chainsight.traced_stage("retrieval", name="keyword_search", system="bm25", collection="kb")
    def keyword_search(self, query: str) -> list[tuple[Document, float]]:
        """BM25 over the same articles, in process."""
        return self.keywords.search(query, self.top_k)

    @chainsight.traced_stage("rerank", name="rerank", model="overlap-v1")
    def rerank(self, query: str, candidates: Sequence[tuple[Document, float]]) -> list[Document]:
        """Keep the best few candidates by a local cross-score."""
        scores = rerank_scores(query, candidates)
        ranked = sorted(
            zip(scores, candidates, strict=True), key=lambda item: item[0], reverse=True
        )
        return [doc for _, (doc, _) in ranked[: self.context_k]]

    @chainsight.traced_stage("prompt", name="build_prompt", prompt_name="answer")
    def build_prompt(self, ticket: Ticket, context: Sequence[Document]) -> list[dict[str, str]]:
        """System and user messages from the answer template and the chosen articles."""
        version = "8" if self.faults.hits("app-bug") else "7"
        chainsight.current_stage().set(**{n.GEN_AI_PROMPT_VERSION: version})
        articles = "\n".join(f"[{d.id}] {d.title}: {d.text}" for d in context)
        user = _TEMPLATES[version].format(
            question=ticket.question, articles=articles, **ticket.customer
        )
        return [{"role": "system", "content": _SYSTEM_PROMPT}, {"role": "user", "content": user}]

    @chainsight.traced_stage("model", name="generate_answer", provider=PROVIDER, model=MODEL)
    async def generate(self, messages: Sequence[Mapping[str, str]]) -> AsyncIterator[str]:
        """Stream the model's answer through the OpenAI SDK.

        chainsight.instrument("openai") records the stream's usage, cost, response model and
        time to first chunk on this stage; the SDK's errors (429, 400, 503, a timeout) pass
        through, and chainsight classifies them.
        """
        temperature = 2.5 if self.faults.hits("provider-bad-request") else 0.2
        stream = await self.llm.chat.completions.create(
            model=MODEL,
            messages=cast("list[ChatCompletionMessageParam]", list(messages)),
            temperature=temperature,
            stream=True,
            stream_options={"include_usage": True},  # or the stream carries no token counts
        )
        async with stream:
            async for chunk in stream:
                if chunk.choices and chunk.choices[0].delta.content:
                    yield chunk.choices[0].delta.content

    @chainsight.traced_stage("validation", name="validate_answer", validator="answer_json")
    def validate(self, text: str, allowed: Sequence[str]) -> tuple[str, tuple[str, ...]] | None:
        """Check the model's JSON; ``None`` when it is unusable (recorded as a model fault)."""
        stage = chainsight.current_stage()
        try:
            parsed = parse_answer(text, allowed)
        except InvalidAnswer as exc:
            stage.record_validation(passed=False, reason=str(exc))
            return None
        stage.record_validation(passed=True)
        return parsed


def demo_prices() -> dict[str, Any]:
    """Prices for the simulated model (the bundled table does not know it)."""
    return {f"{PROVIDER}/{MODEL}": {"unit": "1M_tokens", "input": 2.5, "output": 10.0}}
