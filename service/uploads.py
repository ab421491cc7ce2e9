"""Uploaded files -> payloads (label, bytes): the only part of the image path that knows about HTTP."""

from __future__ import annotations

from fastapi import UploadFile

from service.preprocess import Payload


async def read(upload: UploadFile, label: str) -> Payload:
    name = f" '{upload.filename}'" if upload.filename else ""
    return f"{label}{name}", await upload.read()
