"""Search by face: which photos of the library contain the person in a query image."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from sqlalchemy import select

from faceatlas.errors import NoFaceError
from faceatlas.library.clustering import load_faces
from faceatlas.library.tables import Face, Person, Photo
from faceatlas.storage import Database


@dataclass(frozen=True, slots=True)
class SearchHit:
    photo_id: int
    path: str
    face_id: int
    similarity: float  # cosine similarity of the best-matching face in the photo
    person_id: int | None
    person_name: str | None
    match: bool  # similarity >= the pack's same-person threshold


def search_by_embedding(
    db: Database, embedding: np.ndarray, *, pack: str, threshold: float, top: int = 20
) -> list[SearchHit]:
    """Photos ranked by their best face's cosine similarity to ``embedding`` (same pack only)."""
    query = np.asarray(embedding, np.float32).ravel()
    query = query / max(float(np.linalg.norm(query)), 1e-12)
    with db.session() as session:
        faces = load_faces(session, pack)
        if faces.ids.size == 0:
            return []
        sims = faces.embeddings @ query
        # Best face per photo: sort by similarity, keep the first row of each photo.
        order = np.argsort(-sims, kind="stable")
        _, first = np.unique(faces.photo_ids[order], return_index=True)
        best = order[np.sort(first)][:top] if top > 0 else order[np.sort(first)]
        face_ids = [int(i) for i in faces.ids[best]]
        info = {
            fid: (pid, path, person_id, name)
            for fid, pid, path, person_id, name in session.execute(
                select(Face.id, Photo.id, Photo.path, Face.person_id, Person.name)
                .join(Photo, Photo.id == Face.photo_id)
                .outerjoin(Person, Person.id == Face.person_id)
                .where(Face.id.in_(face_ids))
            ).all()
        }
    hits = []
    for idx, fid in zip(best, face_ids, strict=True):
        pid, path, person_id, name = info[fid]
        sim = float(sims[idx])
        hits.append(SearchHit(pid, path, fid, sim, person_id, name, sim >= threshold))
    return hits


def search_by_image(db: Database, engine: Any, image: Any, *, top: int = 20) -> list[SearchHit]:
    """Search with the largest face of ``image`` (anything ``engine.analyze`` accepts)."""
    faces = engine.analyze(image, limit=1)
    if not faces or faces[0].embedding is None:
        raise NoFaceError("no face found in the query image")
    return search_by_embedding(
        db, faces[0].embedding, pack=engine.pack.id, threshold=engine.pack.threshold, top=top
    )
