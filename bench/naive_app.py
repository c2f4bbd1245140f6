"""The naive peer: FastAPI + a pydantic model + one aiosqlite INSERT and commit per request,
the way a first version of such a service usually looks. DB path from NAIVE_DB."""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import aiosqlite
from fastapi import FastAPI
from pydantic import BaseModel

DB = os.environ.get("NAIVE_DB", "naive.db")
state: dict[str, aiosqlite.Connection] = {}


class Request(BaseModel):
    topic: str
    description: str


@asynccontextmanager
async def lifespan(_: FastAPI) -> AsyncIterator[None]:
    conn = await aiosqlite.connect(DB)
    await conn.execute("PRAGMA journal_mode=WAL")
    await conn.execute("CREATE TABLE IF NOT EXISTS r (id TEXT PRIMARY KEY, topic TEXT, d TEXT)")
    state["db"] = conn
    yield
    await conn.close()


app = FastAPI(lifespan=lifespan)


@app.post("/v1/assistance-requests", status_code=202)
async def ingest(body: Request) -> dict[str, str]:
    request_id = str(uuid.uuid4())
    conn = state["db"]
    await conn.execute("INSERT INTO r VALUES (?, ?, ?)", (request_id, body.topic, body.description))
    await conn.commit()
    return {"id": request_id, "status": "accepted"}
