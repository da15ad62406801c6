-- The square (DESIGN section 13; seed 003's 广场): completed works their owners chose to share,
-- with likes, favorites and plays. A post is keyed by its work's id (one post per work), so a
-- feed item, a like and a withdrawal all name the work. `works.is_public` mirrors whether a
-- post exists: publishing, withdrawing and seed 001's is_public edit change both in one
-- transaction, and deleting a work removes its post in the transaction that hides the work.
-- Same portability rules as the first migration: TEXT, BIGINT and DOUBLE PRECISION only,
-- times in unix milliseconds.

CREATE TABLE square_posts (
    id              TEXT NOT NULL PRIMARY KEY REFERENCES works (id) ON DELETE CASCADE,
    user_id         TEXT NOT NULL REFERENCES users (id),
    -- The work's kind, copied (it never changes) so a feed by type is served by an index.
    kind            TEXT NOT NULL CHECK (kind IN ('image', 'video')),
    description     TEXT NOT NULL,
    -- Exact counts of square_reactions rows, changed in the transaction that inserts or
    -- deletes the reaction.
    like_count      BIGINT NOT NULL DEFAULT 0 CHECK (like_count >= 0),
    favorite_count  BIGINT NOT NULL DEFAULT 0 CHECK (favorite_count >= 0),
    -- Plays are counted in memory and added here in batches (one UPDATE per post per flush).
    play_count      BIGINT NOT NULL DEFAULT 0 CHECK (play_count >= 0),
    published_at    BIGINT NOT NULL,
    updated_at      BIGINT NOT NULL
);

-- The latest feed (all, by type, by author), newest first.
CREATE INDEX square_posts_published ON square_posts (published_at);
CREATE INDEX square_posts_kind_published ON square_posts (kind, published_at);
CREATE INDEX square_posts_user_published ON square_posts (user_id, published_at);

-- One like and one favorite per user and post: the primary key makes a repeated request a
-- no-op. Withdrawing a post (or deleting its work) takes its reactions with it.
CREATE TABLE square_reactions (
    post_id         TEXT NOT NULL REFERENCES square_posts (id) ON DELETE CASCADE,
    user_id         TEXT NOT NULL REFERENCES users (id),
    kind            TEXT NOT NULL CHECK (kind IN ('like', 'favorite')),
    created_at      BIGINT NOT NULL,
    PRIMARY KEY (post_id, user_id, kind)
);

-- What one user liked or favorited, newest first.
CREATE INDEX square_reactions_user ON square_reactions (user_id, kind, created_at);
