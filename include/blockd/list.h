/*
 * list.h - intrusive circular doubly linked list.
 *
 * Common code, not thread-safe by itself: whoever owns the list protects it.
 */
#ifndef BLOCKD_LIST_H
#define BLOCKD_LIST_H

#include <stdbool.h>
#include "blockd/compiler.h"

typedef struct ListNode {
    struct ListNode *next;
    struct ListNode *prev;
} ListNode;

#define LIST_INIT_STATIC(name) { &(name), &(name) }

static inline void list_init(ListNode *head)
{
    head->next = head;
    head->prev = head;
}

static inline bool list_empty(const ListNode *head)
{
    return head->next == head;
}

static inline void list_insert_between(ListNode *n, ListNode *prev, ListNode *next)
{
    n->prev = prev;
    n->next = next;
    prev->next = n;
    next->prev = n;
}

static inline void list_add_tail(ListNode *head, ListNode *n)
{
    list_insert_between(n, head->prev, head);
}

static inline void list_add_head(ListNode *head, ListNode *n)
{
    list_insert_between(n, head, head->next);
}

/* Insert @n before @pos (which may be the head, meaning "at the tail"). */
static inline void list_insert_before(ListNode *pos, ListNode *n)
{
    list_insert_between(n, pos->prev, pos);
}

static inline void list_del(ListNode *n)
{
    n->prev->next = n->next;
    n->next->prev = n->prev;
    n->next = n->prev = n;
}

/* Is @n linked into some list?  (Only valid if unlinked nodes are list_init'ed.) */
static inline bool list_linked(const ListNode *n)
{
    return n->next != n;
}

/* Move every element of @from to the tail of @to; @from ends up empty. */
static inline void list_splice_tail(ListNode *to, ListNode *from)
{
    if (list_empty(from)) {
        return;
    }
    ListNode *first = from->next, *last = from->prev;
    first->prev = to->prev;
    to->prev->next = first;
    last->next = to;
    to->prev = last;
    list_init(from);
}

#define list_entry(node, type, member) container_of(node, type, member)
#define list_first(head, type, member) \
    (list_empty(head) ? NULL : list_entry((head)->next, type, member))

#define list_for_each(pos, head) \
    for (ListNode *pos = (head)->next; pos != (head); pos = pos->next)
#define list_for_each_safe(pos, head) \
    for (ListNode *pos = (head)->next, *pos##_next_ = pos->next; \
         pos != (head); pos = pos##_next_, pos##_next_ = pos->next)

#endif /* BLOCKD_LIST_H */
