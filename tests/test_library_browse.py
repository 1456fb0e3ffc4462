"""Paged reading and the web app's decisions on synthetic faces, on SQLite and PostgreSQL."""

from __future__ import annotations

import numpy as np
import pytest
from sqlalchemy import func, select

from faceatlas.library import browse
from faceatlas.library.clustering import cluster_library
from faceatlas.library.people import (
    DecisionError,
    FaceNotFoundError,
    assign_face,
    hide_person,
    ignore_face,
    merge_people,
    rename_person,
    set_cover_face,
)
from faceatlas.library.tables import Decision, Face
from tests.test_library_people import OPTIONS, PACK, add_photos, db, people_vectors  # noqa: F401


@pytest.fixture()
def library(db, people_vectors):  # noqa: F811
    """Three people with 6, 4 and 3 photos, two photos showing people 0 and 1, one odd face."""
    photos = [[people_vectors(0)] for _ in range(6)]
    photos += [[people_vectors(1)] for _ in range(4)]
    photos += [[people_vectors(2)] for _ in range(3)]
    photos += [[people_vectors(0), people_vectors(1)] for _ in range(2)]
    photos += [[people_vectors(3)]]
    add_photos(db, photos)
    cluster_library(db, PACK, OPTIONS)
    return db


def owner(database, face_id: int) -> int | None:
    with database.session() as session:
        return session.get(Face, face_id).person_id


def test_people_page_sorts_filters_and_pages(library):
    total, people = browse.people_page(library, limit=2)
    assert total == 3 and len(people) == 2
    assert [p.faces for p in people] == [8, 6]
    assert all(p.cover_face_id is not None for p in people)
    rest = browse.people_page(library, offset=2, limit=2)[1]
    assert [p.faces for p in rest] == [3]
    rename_person(library, rest[0].id, "Zoë")
    assert browse.people_page(library, show="named")[0] == 1
    assert browse.people_page(library, show="unnamed")[0] == 2
    assert browse.people_page(library, sort="name")[1][0].name == "Zoë"  # unnamed last
    assert [p.id for p in browse.people_page(library, query="zo")[1]] == [rest[0].id]
    assert browse.people_page(library, query="%")[0] == 0  # wildcards are literal
    hide_person(library, rest[0].id)
    assert browse.people_page(library)[0] == 2
    assert [p.id for p in browse.people_page(library, show="hidden")[1]] == [rest[0].id]
    with pytest.raises(ValueError):
        browse.people_page(library, sort="age")
    # covers from the cached mean faces agree with the looked-up ones
    cached = browse.people_page(library, pack=PACK)[1]
    assert [p.cover_face_id for p in cached] == [p.cover_face_id for p in browse.people_page(library)[1]]


def test_cover_face_must_be_the_persons(library):
    people = browse.people_page(library)[1]
    big, other = people[0], people[1]
    faces = [f.id for f in browse.person_faces_page(library, big.id)[1]]
    set_cover_face(library, big.id, faces[-1])
    assert browse.person_card(library, big.id).cover_face_id == faces[-1]
    with pytest.raises(FaceNotFoundError):
        set_cover_face(library, big.id, browse.person_faces_page(library, other.id)[1][0].id)
    # the cover face leaves the person: the best remaining face is shown instead
    assign_face(library, faces[-1], None)
    assert browse.person_card(library, big.id).cover_face_id not in (None, faces[-1])


def test_review_queue_suggests_and_assign_is_remembered(library):
    total, items = browse.review_queue(library, pack=PACK, threshold=OPTIONS.threshold)
    assert total == 1 and len(items) == 1
    odd = items[0].face.id
    sims = [s.similarity for s in items[0].suggestions]
    assert sims == sorted(sims, reverse=True) and not any(s.match for s in items[0].suggestions)
    target = items[0].suggestions[0].person_id
    assign_face(library, odd, target)
    assert browse.review_queue(library, pack=PACK, threshold=OPTIONS.threshold)[0] == 0
    cluster_library(library, PACK, OPTIONS, rebuild=True)
    assert owner(library, odd) == target  # a user's assignment survives a rebuild
    with library.session() as session:
        assert session.scalar(select(Decision.id).where(Decision.kind == "assign", Decision.face_id == odd))


def test_assign_refuses_a_second_face_of_one_photo(library):
    shared_photos = select(Face.photo_id).group_by(Face.photo_id).having(func.count() == 2)
    with library.session() as session:
        pair = session.execute(
            select(Face.id, Face.person_id).where(Face.photo_id.in_(shared_photos)).order_by(Face.id)
        ).all()[:2]
    (a, pa), (b, pb) = pair
    with pytest.raises(DecisionError, match="same photo"):
        assign_face(library, a, pb)
    new = assign_face(library, a, None, name="Newcomer")
    assert owner(library, a) == new.id and new.name == "Newcomer"
    with pytest.raises(DecisionError):
        assign_face(library, b, None, name="Newcomer")  # the name is taken
    with pytest.raises(FaceNotFoundError):
        assign_face(library, 999_999, pa)


def test_ignore_leaves_the_queue(library):
    odd = browse.review_queue(library, pack=PACK, threshold=OPTIONS.threshold)[1][0].face.id
    ignore_face(library, odd)
    ignore_face(library, odd)  # twice is fine
    assert browse.review_queue(library, pack=PACK, threshold=OPTIONS.threshold)[0] == 0
    with pytest.raises(FaceNotFoundError):
        ignore_face(library, 999_999)


def test_merge_explains_faces_left_behind(library):
    people = browse.people_page(library)[1]
    a, b = people[0].id, people[1].id
    result = merge_people(library, a, b)
    assert len(result.left_behind) == 2  # the two photos that show both
    assert "two faces of one photo" in (result.reason or "")
    assert browse.person_card(library, a).faces == 8 + 6 - 2


def test_closest_people_and_photos(library):
    people = browse.people_page(library)[1]
    found = browse.closest_people(library, people[0].id, pack=PACK, threshold=OPTIONS.threshold)
    assert people[0].id not in [s.person_id for s in found] and len(found) == 2
    total, photos = browse.photos_page(library, person=people[1].id)
    assert total == 6
    assert browse.photos_page(library, folder="/photos")[0] == 16
    assert browse.photos_page(library, folder="/phot")[0] == 0  # a folder, not a name prefix
    card, faces = browse.photo_detail(library, photos[0].id)
    assert card.id == photos[0].id and faces
    with pytest.raises(browse.PhotoNotFoundError):
        browse.photo_detail(library, 999_999)
    counts = browse.library_counts(library)
    assert (counts.photos, counts.faces, counts.people, counts.unassigned) == (16, 18, 3, 1)
    assert np.isfinite([s.similarity for s in found]).all()
