"""username as a unique index; deleting a user keeps their comments

Revision ID: 9f4d2b8e6a13
Revises: 73be0a5c2d98
Create Date: 2024-03-18 17:21:45.118930

"""
from alembic import op

# revision identifiers, used by Alembic.
revision = '9f4d2b8e6a13'
down_revision = '73be0a5c2d98'
branch_labels = None
depends_on = None


def upgrade():
    with op.batch_alter_table('users', schema=None) as batch_op:
        batch_op.drop_constraint('uq_users_username', type_='unique')
        batch_op.create_index(batch_op.f('ix_users_username'), ['username'], unique=True)

    op.drop_constraint('fk_comments_author_id_users', 'comments', type_='foreignkey')
    op.create_foreign_key(op.f('fk_comments_author_id_users'), 'comments', 'users',
                          ['author_id'], ['id'], ondelete='SET NULL')


def downgrade():
    op.drop_constraint('fk_comments_author_id_users', 'comments', type_='foreignkey')
    op.create_foreign_key(None, 'comments', 'users', ['author_id'], ['id'])

    with op.batch_alter_table('users', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_users_username'))
        batch_op.create_unique_constraint(batch_op.f('uq_users_username'), ['username'])
