"""rename posts.body to posts.content (copy, then drop)

Revision ID: b6e3f1a0c8d4
Revises: 9f4d2b8e6a13
Create Date: 2024-04-02 13:48:20.554871

"""
import sqlalchemy as sa
from alembic import op

# revision identifiers, used by Alembic.
revision = 'b6e3f1a0c8d4'
down_revision = '9f4d2b8e6a13'
branch_labels = None
depends_on = None


def upgrade():
    with op.batch_alter_table('posts', schema=None) as batch_op:
        batch_op.add_column(sa.Column('content', sa.Text(), nullable=True))

    op.execute("UPDATE posts SET content = coalesce(body, '')")

    with op.batch_alter_table('posts', schema=None) as batch_op:
        batch_op.alter_column('content', existing_type=sa.Text(), nullable=False)
        batch_op.drop_column('body')


def downgrade():
    with op.batch_alter_table('posts', schema=None) as batch_op:
        batch_op.add_column(sa.Column('body', sa.Text(), nullable=True))

    op.execute('UPDATE posts SET body = content')

    with op.batch_alter_table('posts', schema=None) as batch_op:
        batch_op.drop_column('content')
