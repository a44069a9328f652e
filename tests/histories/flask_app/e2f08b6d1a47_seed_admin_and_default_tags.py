"""seed admin user, default tags and the welcome post

Revision ID: e2f08b6d1a47
Revises: c47e19ab0d35
Create Date: 2024-02-12 14:29:10.004512

"""
import sqlalchemy as sa
from alembic import op

# revision identifiers, used by Alembic.
revision = 'e2f08b6d1a47'
down_revision = 'c47e19ab0d35'
branch_labels = None
depends_on = None

# Lightweight tables: the models change later, the migration must not follow them.
users = sa.table('users',
    sa.column('id', sa.Integer),
    sa.column('email', sa.String),
    sa.column('username', sa.String),
)
tags = sa.table('tags', sa.column('id', sa.Integer), sa.column('name', sa.String))
posts = sa.table('posts',
    sa.column('id', sa.Integer),
    sa.column('title', sa.String),
    sa.column('body', sa.Text),
    sa.column('author_id', sa.Integer),
)
post_tags = sa.table('post_tags', sa.column('post_id', sa.Integer), sa.column('tag_id', sa.Integer))

DEFAULT_TAGS = ['announcements', 'howto', 'release-notes']


def upgrade():
    op.bulk_insert(users, [{'email': 'admin@blog.example', 'username': 'admin'}])
    op.bulk_insert(tags, [{'name': name} for name in DEFAULT_TAGS])
    admin_id = sa.select(users.c.id).where(users.c.username == 'admin').scalar_subquery()
    op.execute(posts.insert().values(
        title='Welcome to the blog',
        body='This is the first post. Edit or delete it, then start writing!',
        author_id=admin_id,
    ))
    op.execute(post_tags.insert().values(
        post_id=sa.select(posts.c.id)
        .where(posts.c.title == 'Welcome to the blog').scalar_subquery(),
        tag_id=sa.select(tags.c.id).where(tags.c.name == 'announcements').scalar_subquery(),
    ))


def downgrade():
    op.execute(posts.delete().where(posts.c.title == 'Welcome to the blog'))
    op.execute(tags.delete().where(tags.c.name.in_(DEFAULT_TAGS)))
    op.execute(users.delete().where(users.c.username == 'admin'))
