/*
 * Intrusive doubly-linked circular list (the struct list_head idiom).
 * Embed a ListHead in the element; the list itself is a ListHead too.
 * Header-only: no allocation, O(1) insert/remove.
 */
#ifndef BJ_UTIL_LIST_H
#define BJ_UTIL_LIST_H

#include <stdbool.h>
#include <stddef.h>

typedef struct ListHead {
    struct ListHead *next, *prev;
} ListHead;

#define container_of(ptr, type, member) \
    ((type *)((char *)(ptr) - offsetof(type, member)))

#define LIST_HEAD_INIT(name) { &(name), &(name) }

static inline void list_init(ListHead *h)
{
    h->next = h;
    h->prev = h;
}

static inline bool list_empty(const ListHead *h)
{
    return h->next == h;
}

static inline void list_insert_between(ListHead *n, ListHead *prev,
                                       ListHead *next)
{
    next->prev = n;
    n->next = next;
    n->prev = prev;
    prev->next = n;
}

/* Adds n at the front of list h. */
static inline void list_add_head(ListHead *h, ListHead *n)
{
    list_insert_between(n, h, h->next);
}

/* Adds n at the tail of list h. */
static inline void list_add_tail(ListHead *h, ListHead *n)
{
    list_insert_between(n, h->prev, h);
}

/* Unlinks n and leaves it self-linked, so list_unlinked(n) is true. */
static inline void list_del(ListHead *n)
{
    n->next->prev = n->prev;
    n->prev->next = n->next;
    list_init(n);
}

static inline bool list_unlinked(const ListHead *n)
{
    return n->next == n;
}

#define list_entry(ptr, type, member) container_of(ptr, type, member)
#define list_first_entry(h, type, member) list_entry((h)->next, type, member)

#define list_for_each_entry(pos, h, member)                                 \
    for (pos = list_entry((h)->next, __typeof__(*pos), member);             \
         &pos->member != (h);                                               \
         pos = list_entry(pos->member.next, __typeof__(*pos), member))

/* Safe against removal of pos while iterating. */
#define list_for_each_entry_safe(pos, tmp, h, member)                       \
    for (pos = list_entry((h)->next, __typeof__(*pos), member),             \
         tmp = list_entry(pos->member.next, __typeof__(*pos), member);      \
         &pos->member != (h);                                               \
         pos = tmp, tmp = list_entry(tmp->member.next, __typeof__(*tmp), member))

#define list_for_each_entry_reverse(pos, h, member)                         \
    for (pos = list_entry((h)->prev, __typeof__(*pos), member);             \
         &pos->member != (h);                                               \
         pos = list_entry(pos->member.prev, __typeof__(*pos), member))

#endif
